//! Metadata, DescribeCluster and DescribeLogDirs.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    describe_quorum_response, BrokerId, DescribeClusterRequest, DescribeClusterResponse,
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::cluster::{ClusterView, TopicView};
use crate::services::Services;

/// Kafka's marker for "authorized operations not requested".
const OPS_NOT_REQUESTED: i32 = i32::MIN;

pub(super) async fn metadata(
    broker: &Arc<Services>,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    resp.cluster_authorized_operations = OPS_NOT_REQUESTED;

    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto_create = (version < 4 || req.allow_auto_topic_creation)
        && broker.config.broker.auto_create_topics_enable;
    resp.topics = match requested {
        None => {
            let view = broker.view();
            view.topics
                .values()
                .map(|t| topic_entry(&view, t))
                .collect()
        }
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for rt in list {
                let by_name = rt.name.as_ref().map(|n| n.0.to_string());
                let found = match &by_name {
                    Some(name) => broker.topic(name),
                    None => broker.topic_by_id(rt.topic_id),
                };
                out.push(match (found, by_name) {
                    (Some(t), _) => topic_entry(&broker.view(), &t),
                    (None, Some(name)) => {
                        if let Err(e) = crate::topics::validate_topic_name(&name) {
                            error_entry(Some(name), Uuid::nil(), e.code())
                        } else if allow_auto_create {
                            let created = broker
                                .admin
                                .create_topic(&name, -1, -1, BTreeMap::new(), false)
                                .await;
                            if let Err(e) = &created {
                                tracing::debug!(topic = %name, error = %e, "auto-creation failed");
                            }
                            // Created here, or by another request meanwhile.
                            match broker.topic(&name) {
                                Some(t) => topic_entry(&broker.view(), &t),
                                None => error_entry(
                                    Some(name),
                                    Uuid::nil(),
                                    ResponseError::LeaderNotAvailable.code(),
                                ),
                            }
                        } else {
                            error_entry(
                                Some(name),
                                Uuid::nil(),
                                ResponseError::UnknownTopicOrPartition.code(),
                            )
                        }
                    }
                    (None, None) => {
                        error_entry(None, rt.topic_id, ResponseError::UnknownTopicId.code())
                    }
                });
            }
            out
        }
    };
    // Brokers last, so that every leader named above is in the list.
    let view = broker.view();
    resp.brokers = view
        .live_endpoints()
        .map(|(id, host, port, rack)| {
            let mut m = MetadataResponseBroker::default();
            m.node_id = BrokerId(id);
            m.host = StrBytes::from_string(host.to_string());
            m.port = port;
            m.rack = rack.map(|r| StrBytes::from_string(r.to_string()));
            m
        })
        .collect();
    resp.cluster_id = Some(StrBytes::from_string(view.cluster_id.clone()));
    resp.controller_id = BrokerId(broker.cluster.reported_controller_id());
    resp
}

fn error_entry(name: Option<String>, id: Uuid, code: i16) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = code;
    t.name = name.map(|n| TopicName(StrBytes::from_string(n)));
    t.topic_id = id;
    t.topic_authorized_operations = OPS_NOT_REQUESTED;
    t
}

fn topic_entry(view: &ClusterView, topic: &TopicView) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    t.topic_id = topic.id;
    t.is_internal = crate::topics::is_internal_topic(&topic.name);
    t.topic_authorized_operations = OPS_NOT_REQUESTED;
    t.partitions = topic
        .states
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i32::try_from(i).unwrap_or(i32::MAX);
            p.replica_nodes = st.replicas.iter().map(|r| BrokerId(*r)).collect();
            p.offline_replicas = st
                .replicas
                .iter()
                .filter(|r| !view.is_live(**r))
                .map(|r| BrokerId(*r))
                .collect();
            // The ISR as the leader last reported it, live brokers only.
            p.isr_nodes = st
                .isr
                .iter()
                .filter(|r| view.is_live(**r))
                .map(|r| BrokerId(*r))
                .collect();
            if view.is_live(st.leader) {
                p.leader_id = BrokerId(st.leader);
                p.leader_epoch = st.leader_epoch;
                if !st.isr.contains(&st.leader) {
                    p.isr_nodes.insert(0, BrokerId(st.leader));
                }
            } else {
                p.error_code = ResponseError::LeaderNotAvailable.code();
                p.leader_id = BrokerId(-1);
                p.leader_epoch = st.leader_epoch;
            }
            p
        })
        .collect();
    t
}

pub(super) fn describe_cluster(
    broker: &Arc<Services>,
    _req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let view = broker.view();
    let mut resp = DescribeClusterResponse::default();
    resp.brokers = view
        .live_endpoints()
        .map(|(id, host, port, rack)| {
            let mut d = DescribeClusterBroker::default();
            d.broker_id = BrokerId(id);
            d.host = StrBytes::from_string(host.to_string());
            d.port = port;
            d.rack = rack.map(|r| StrBytes::from_string(r.to_string()));
            d
        })
        .collect();
    resp.cluster_id = StrBytes::from_string(view.cluster_id.clone());
    resp.controller_id = BrokerId(broker.cluster.reported_controller_id());
    resp.cluster_authorized_operations = OPS_NOT_REQUESTED;
    resp.endpoint_type = 1;
    resp
}

/// The metadata log's name in DescribeQuorum (KRaft's).
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum: the metadata quorum's leader, its commit index (high watermark) and each voter's
/// replicated log end, from the active controller's view.
pub(super) async fn describe_quorum(
    broker: &Arc<Services>,
    req: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    let mut resp = DescribeQuorumResponse::default();
    let status = broker.cluster.leader_status().await;
    for t in req.topics {
        let mut topic = describe_quorum_response::TopicData::default();
        topic.topic_name = t.topic_name.clone();
        for p in t.partitions {
            let mut part = describe_quorum_response::PartitionData::default();
            part.partition_index = p.partition_index;
            let known = t.topic_name.0.as_str() == METADATA_TOPIC && p.partition_index == 0;
            match (&status, known) {
                (_, false) => {
                    part.error_code = ResponseError::UnknownTopicOrPartition.code();
                }
                (Err(e), true) => {
                    part.error_code = ResponseError::NotLeaderOrFollower.code();
                    if version >= 2 {
                        part.error_message = Some(StrBytes::from_string(e.clone()));
                    }
                }
                (Ok(st), true) => {
                    let leader = st.current_leader.unwrap_or(st.node_id);
                    part.leader_id = BrokerId(i32::try_from(leader).unwrap_or(-1));
                    part.leader_epoch = i32::try_from(st.term).unwrap_or(i32::MAX);
                    part.high_watermark = st.committed.map_or(-1, |c| c as i64);
                    let matched = st.matched.clone().unwrap_or_default();
                    part.current_voters = st
                        .voters
                        .keys()
                        .map(|id| {
                            let mut r = describe_quorum_response::ReplicaState::default();
                            r.replica_id = BrokerId(i32::try_from(*id).unwrap_or(-1));
                            let end = if *id == leader {
                                st.last_log_index
                            } else {
                                matched.get(id).copied().flatten()
                            };
                            // Raft indexes count entries from 1; a log end offset is the next one.
                            r.log_end_offset = end.map_or(0, |i| i as i64 + 1);
                            r
                        })
                        .collect();
                }
            }
            topic.partitions.push(part);
        }
        resp.topics.push(topic);
    }
    if version >= 2 {
        if let Ok(st) = &status {
            resp.nodes = st
                .voters
                .iter()
                .filter_map(|(id, addr)| {
                    let (host, port) = addr.rsplit_once(':')?;
                    let mut n = describe_quorum_response::Node::default();
                    n.node_id = BrokerId(i32::try_from(*id).ok()?);
                    let mut l = describe_quorum_response::Listener::default();
                    l.name = StrBytes::from_static_str("CONTROLLER");
                    l.host = StrBytes::from_string(host.to_string());
                    l.port = port.parse().ok()?;
                    n.listeners = vec![l];
                    Some(n)
                })
                .collect();
        }
    }
    resp
}

pub(super) fn describe_log_dirs(
    broker: &Arc<Services>,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let mut partitions = broker.replicas.all();
    partitions.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    for p in partitions {
        if let Some(w) = &wanted {
            match w.get(&p.topic) {
                Some(idx) if idx.contains(&p.index) => {}
                _ => continue,
            }
        }
        let (_, _, size) = p.offsets();
        let mut e = DescribeLogDirsPartition::default();
        e.partition_index = p.index;
        e.partition_size = i64::try_from(size).unwrap_or(i64::MAX);
        e.offset_lag = 0;
        by_topic.entry(p.topic.clone()).or_default().push(e);
    }
    let mut dir = DescribeLogDirsResult::default();
    dir.log_dir = StrBytes::from_string(
        std::fs::canonicalize(broker.replicas.data_dir())
            .unwrap_or_else(|_| broker.replicas.data_dir().to_path_buf())
            .display()
            .to_string(),
    );
    dir.topics = by_topic
        .into_iter()
        .map(|(name, parts)| {
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(StrBytes::from_string(name));
            t.partitions = parts;
            t
        })
        .collect();
    let (total, usable) = disk_space(broker.replicas.data_dir());
    dir.total_bytes = total;
    dir.usable_bytes = usable;
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![dir];
    resp
}

/// (total, available) bytes of the filesystem holding `path`, or (-1, -1) if unknown.
pub(crate) fn disk_space(path: &std::path::Path) -> (i64, i64) {
    match fs_stats(path) {
        Some((total, avail)) => (total, avail),
        None => (-1, -1),
    }
}

fn fs_stats(path: &std::path::Path) -> Option<(i64, i64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as i64;
    Some((
        (st.blocks() as i64).saturating_mul(frsize),
        (st.blocks_available() as i64).saturating_mul(frsize),
    ))
}
