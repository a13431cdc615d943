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
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::broker::Broker;
use crate::metadata_store::TopicRecord;

/// Kafka's marker for "authorized operations not requested".
const OPS_NOT_REQUESTED: i32 = i32::MIN;

pub(super) fn metadata(
    broker: &Arc<Broker>,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(broker.node_id());
    b.host = StrBytes::from_string(broker.config.advertised_host.clone());
    b.port = broker.config.advertised_port;
    b.rack = broker.config.broker.rack.clone().map(StrBytes::from_string);
    resp.brokers = vec![b];
    resp.cluster_id = Some(StrBytes::from_string(broker.cluster_id()));
    resp.controller_id = BrokerId(broker.node_id());
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
        None => broker
            .topics()
            .iter()
            .map(|t| topic_entry(broker, t))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|rt| {
                let by_name = rt.name.as_ref().map(|n| n.0.to_string());
                let found = match &by_name {
                    Some(name) => broker.topic(name),
                    None => broker.topic_by_id(rt.topic_id),
                };
                match (found, by_name) {
                    (Some(t), _) => topic_entry(broker, &t),
                    (None, Some(name)) => {
                        if let Err(e) = Broker::validate_topic_name(&name) {
                            error_entry(Some(name), Uuid::nil(), e.code())
                        } else if allow_auto_create {
                            match broker.create_topic(&name, -1, -1, BTreeMap::new(), false) {
                                Ok(_) => match broker.topic(&name) {
                                    Some(t) => topic_entry(broker, &t),
                                    None => error_entry(
                                        Some(name),
                                        Uuid::nil(),
                                        ResponseError::LeaderNotAvailable.code(),
                                    ),
                                },
                                // Another request created it meanwhile.
                                Err(_) => match broker.topic(&name) {
                                    Some(t) => topic_entry(broker, &t),
                                    None => error_entry(
                                        Some(name),
                                        Uuid::nil(),
                                        ResponseError::UnknownTopicOrPartition.code(),
                                    ),
                                },
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
                }
            })
            .collect(),
    };
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

fn topic_entry(broker: &Broker, topic: &TopicRecord) -> MetadataResponseTopic {
    let node = BrokerId(broker.node_id());
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    t.topic_id = topic.id;
    t.is_internal = crate::broker::is_internal_topic(&topic.name);
    t.topic_authorized_operations = OPS_NOT_REQUESTED;
    t.partitions = (0..topic.partitions)
        .map(|i| {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i;
            match broker.partition(&topic.name, i) {
                Some(part) => {
                    p.leader_id = node;
                    p.leader_epoch = part.leader_epoch;
                    p.replica_nodes = vec![node];
                    p.isr_nodes = vec![node];
                }
                None => {
                    p.error_code = ResponseError::LeaderNotAvailable.code();
                    p.leader_id = BrokerId(-1);
                    p.leader_epoch = -1;
                    p.replica_nodes = vec![node];
                    p.offline_replicas = vec![node];
                }
            }
            p
        })
        .collect();
    t
}

pub(super) fn describe_cluster(
    broker: &Arc<Broker>,
    _req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(broker.node_id());
    b.host = StrBytes::from_string(broker.config.advertised_host.clone());
    b.port = broker.config.advertised_port;
    b.rack = broker.config.broker.rack.clone().map(StrBytes::from_string);
    resp.brokers = vec![b];
    resp.cluster_id = StrBytes::from_string(broker.cluster_id());
    resp.controller_id = BrokerId(broker.node_id());
    resp.cluster_authorized_operations = OPS_NOT_REQUESTED;
    resp.endpoint_type = 1;
    resp
}

pub(super) fn describe_log_dirs(
    broker: &Arc<Broker>,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let mut partitions = broker.logs.all();
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
        std::fs::canonicalize(broker.logs.data_dir())
            .unwrap_or_else(|_| broker.logs.data_dir().to_path_buf())
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
    let (total, usable) = disk_space(broker.logs.data_dir());
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
