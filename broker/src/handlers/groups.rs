//! Group coordinator APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete, and KIP-848's
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe. The handlers translate between
//! the wire structs (gating version-specific fields) and [`crate::group::GroupCoordinator`].

use std::sync::Arc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::error_parts;
use crate::error::{BrokerError, GroupError};
use crate::group::assignor::TopicPartitions;
use crate::group::classic::JoinRequest;
use crate::group::consumer::HeartbeatRequest as ConsumerHeartbeat;
use crate::group::offsets::CommittedOffset;
use crate::services::Services;

/// Who sent a request (DescribeGroups shows it per member).
#[derive(Debug, Clone)]
pub struct Client {
    /// The request header's client id.
    pub id: String,
    /// `/ip` of the peer, as Kafka prints it.
    pub host: String,
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn code(e: GroupError) -> i16 {
    BrokerError::from(e).code()
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|x| x.to_string())
}

/// FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets` partition
/// (created on first use); transactions are not available.
pub async fn find_coordinator(
    broker: &Arc<Services>,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 {
        r.coordinator_keys.clone()
    } else {
        vec![r.key.clone()]
    };
    let mut answers = Vec::with_capacity(keys.len());
    for key in &keys {
        answers.push(coordinator_of(broker, r.key_type, key).await);
    }
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = keys
            .iter()
            .zip(answers)
            .map(|(k, answer)| {
                let mut c = find_coordinator_response::Coordinator::default();
                c.key = k.clone();
                match answer {
                    Ok((node, host, port)) => {
                        c.node_id = node.into();
                        c.host = s(host);
                        c.port = port;
                    }
                    Err(e) => {
                        (c.error_code, c.error_message) = error_parts(&e);
                        c.node_id = (-1).into();
                        c.port = -1;
                    }
                }
                c
            })
            .collect();
    } else {
        match answers.into_iter().next() {
            Some(Ok((node, host, port))) => {
                resp.node_id = node.into();
                resp.host = s(host);
                resp.port = port;
            }
            Some(Err(e)) => {
                let (error_code, error_message) = error_parts(&e);
                resp.error_code = error_code;
                if version >= 1 {
                    resp.error_message = error_message;
                }
                resp.node_id = (-1).into();
                resp.port = -1;
            }
            None => {}
        }
    }
    resp
}

/// The coordinator (node, host, port) of one FindCoordinator key.
async fn coordinator_of(
    broker: &Arc<Services>,
    key_type: i8,
    key: &StrBytes,
) -> Result<(i32, String, i32), BrokerError> {
    if key_type != 0 {
        return Err(GroupError::CoordinatorNotAvailable.into());
    }
    if key.is_empty() {
        return Err(GroupError::InvalidGroupId.into());
    }
    let n = broker.groups.ensure_topic().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot create the offsets topic");
        BrokerError::from(GroupError::CoordinatorNotAvailable)
    })?;
    let index = crate::group::coordinator::partition_for(key, n);
    let view = broker.view();
    let leader = view
        .partition(crate::group::coordinator::OFFSETS_TOPIC, index)
        .map_or(-1, |p| p.leader);
    let (host, port) = view
        .endpoint(leader)
        .ok_or(BrokerError::from(GroupError::CoordinatorNotAvailable))?;
    Ok((leader, host, port))
}

/// JoinGroup.
pub async fn join_group(
    broker: &Arc<Services>,
    r: JoinGroupRequest,
    version: i16,
    client: &Client,
) -> JoinGroupResponse {
    let req = JoinRequest {
        member_id: r.member_id.to_string(),
        instance_id: opt(&r.group_instance_id),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let mut resp = JoinGroupResponse::default();
    let joined = match broker.groups.owns(&r.group_id) {
        Ok(()) => broker.groups.join(&r.group_id, req).await,
        Err(e) => Err((e, req.member_id)),
    };
    match joined {
        Ok(out) => {
            resp.generation_id = out.generation;
            if version >= 7 {
                resp.protocol_type = out.protocol_type.map(s);
                resp.protocol_name = out.protocol.map(s);
            } else {
                resp.protocol_name = Some(s(out.protocol.unwrap_or_default()));
            }
            resp.leader = s(out.leader);
            resp.member_id = s(out.member_id);
            if version >= 9 {
                resp.skip_assignment = out.skip_assignment;
            }
            resp.members = out
                .members
                .into_iter()
                .map(|(id, iid, metadata)| {
                    let mut m = join_group_response::JoinGroupResponseMember::default();
                    m.member_id = s(id);
                    if version >= 5 {
                        m.group_instance_id = iid.map(s);
                    }
                    m.metadata = metadata;
                    m
                })
                .collect();
        }
        Err((e, member_id)) => {
            resp.error_code = code(e);
            resp.generation_id = -1;
            resp.member_id = s(member_id);
            if version < 7 {
                resp.protocol_name = Some(s(""));
            }
        }
    }
    resp
}

/// SyncGroup.
pub async fn sync_group(
    broker: &Arc<Services>,
    r: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let assignments = r
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let iid = opt(&r.group_instance_id);
    let mut resp = SyncGroupResponse::default();
    let synced = match broker.groups.owns(&r.group_id) {
        Ok(()) => {
            broker
                .groups
                .sync(
                    &r.group_id,
                    &r.member_id,
                    iid.as_deref(),
                    r.generation_id,
                    assignments,
                )
                .await
        }
        Err(e) => Err(e),
    };
    match synced {
        Ok(out) => {
            if version >= 5 {
                resp.protocol_type = out.protocol_type.map(s);
                resp.protocol_name = out.protocol.map(s);
            }
            resp.assignment = out.assignment;
        }
        Err(e) => resp.error_code = code(e),
    }
    resp
}

/// Heartbeat.
pub fn heartbeat(broker: &Arc<Services>, r: HeartbeatRequest) -> HeartbeatResponse {
    let iid = opt(&r.group_instance_id);
    let mut resp = HeartbeatResponse::default();
    if let Err(e) = broker.groups.owns(&r.group_id).and_then(|()| {
        broker
            .groups
            .heartbeat(&r.group_id, &r.member_id, iid.as_deref(), r.generation_id)
    }) {
        resp.error_code = code(e);
    }
    resp
}

/// LeaveGroup (one member before v3, a batch from v3).
pub async fn leave_group(
    broker: &Arc<Services>,
    r: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        r.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    let mut resp = LeaveGroupResponse::default();
    let left = match broker.groups.owns(&r.group_id) {
        Ok(()) => broker.groups.leave(&r.group_id, &members).await,
        Err(e) => Err(e),
    };
    match left {
        Ok(results) => {
            if version >= 3 {
                resp.members = members
                    .iter()
                    .zip(results)
                    .map(|((id, iid), res)| {
                        let mut m = leave_group_response::MemberResponse::default();
                        m.member_id = s(id.clone());
                        m.group_instance_id = iid.clone().map(s);
                        m.error_code = res.err().map(code).unwrap_or(0);
                        m
                    })
                    .collect();
            } else if let Some(Err(e)) = results.into_iter().next() {
                resp.error_code = code(e);
            }
        }
        Err(e) => resp.error_code = code(e),
    }
    resp
}

/// OffsetCommit.
pub async fn offset_commit(
    broker: &Arc<Services>,
    r: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let now = crate::replica::now_ms();
    let mut entries = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            entries.push((
                t.name.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: opt(&p.committed_metadata),
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    let iid = if version >= 7 {
        opt(&r.group_instance_id)
    } else {
        None
    };
    let result = match broker.groups.owns(&r.group_id) {
        Ok(()) => {
            broker
                .groups
                .commit(
                    &r.group_id,
                    &r.member_id,
                    iid.as_deref(),
                    r.generation_id_or_member_epoch,
                    entries,
                )
                .await
        }
        Err(e) => Err(BrokerError::from(e)),
    };
    let mut codes: Vec<i16> = match result {
        Ok(rs) => rs
            .into_iter()
            .map(|x| x.err().map(|e| e.code()).unwrap_or(0))
            .collect(),
        Err(e) => vec![e.code(); r.topics.iter().map(|t| t.partitions.len()).sum()],
    }
    .into_iter()
    .rev()
    .collect();
    let mut resp = OffsetCommitResponse::default();
    resp.topics = r
        .topics
        .iter()
        .map(|t| {
            let mut rt = offset_commit_response::OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = offset_commit_response::OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = codes.pop().unwrap_or(0);
                    rp
                })
                .collect();
            rt
        })
        .collect();
    resp
}

fn fetched(
    broker: &Arc<Services>,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> crate::group::coordinator::FetchedOffsets {
    broker.groups.fetch(group, topics)
}

/// OffsetFetch (one group before v8, a batch of groups from v8).
pub fn offset_fetch(
    broker: &Arc<Services>,
    r: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 8 {
        resp.groups = r
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let mut rg = offset_fetch_response::OffsetFetchResponseGroup::default();
                rg.group_id = g.group_id.clone();
                if let Err(e) = broker.groups.owns(&g.group_id) {
                    rg.error_code = code(e);
                    return rg;
                }
                if version >= 9 {
                    let member = g.member_id.as_ref().map(|m| m.to_string());
                    if let Err(e) =
                        broker
                            .groups
                            .validate_fetch(&g.group_id, member.as_deref(), g.member_epoch)
                    {
                        rg.error_code = code(e);
                        return rg;
                    }
                }
                rg.topics = fetched(broker, &g.group_id, topics)
                    .into_iter()
                    .map(|(name, parts)| {
                        let mut rt = offset_fetch_response::OffsetFetchResponseTopics::default();
                        rt.name = s(name).into();
                        rt.partitions = parts
                            .into_iter()
                            .map(|(p, o)| {
                                let mut rp =
                                    offset_fetch_response::OffsetFetchResponsePartitions::default();
                                rp.partition_index = p;
                                match o {
                                    Some(o) => {
                                        rp.committed_offset = o.offset;
                                        rp.committed_leader_epoch = o.leader_epoch;
                                        rp.metadata = Some(s(o.metadata.unwrap_or_default()));
                                    }
                                    None => rp.committed_offset = -1,
                                }
                                rp
                            })
                            .collect();
                        rt
                    })
                    .collect();
                rg
            })
            .collect();
        return resp;
    }
    if let Err(e) = broker.groups.owns(&r.group_id) {
        if version >= 2 {
            resp.error_code = code(e);
            return resp;
        }
    }
    let topics = r.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    resp.topics = fetched(broker, &r.group_id, topics)
        .into_iter()
        .map(|(name, parts)| {
            let mut rt = offset_fetch_response::OffsetFetchResponseTopic::default();
            rt.name = s(name).into();
            rt.partitions = parts
                .into_iter()
                .map(|(p, o)| {
                    let mut rp = offset_fetch_response::OffsetFetchResponsePartition::default();
                    rp.partition_index = p;
                    match o {
                        Some(o) => {
                            rp.committed_offset = o.offset;
                            if version >= 5 {
                                rp.committed_leader_epoch = o.leader_epoch;
                            }
                            rp.metadata = Some(s(o.metadata.unwrap_or_default()));
                        }
                        None => rp.committed_offset = -1,
                    }
                    rp
                })
                .collect();
            rt
        })
        .collect();
    resp
}

/// ListGroups (state filter from v4).
pub fn list_groups(
    broker: &Arc<Services>,
    r: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = if version >= 4 {
        r.states_filter.iter().map(|x| x.to_string()).collect()
    } else {
        Vec::new()
    };
    let types: Vec<String> = if version >= 5 {
        r.types_filter.iter().map(|x| x.to_string()).collect()
    } else {
        Vec::new()
    };
    let mut resp = ListGroupsResponse::default();
    resp.groups = broker
        .groups
        .list(&states)
        .into_iter()
        .filter(|g| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case(g.group_type)))
        .map(|g| {
            let mut l = list_groups_response::ListedGroup::default();
            l.group_id = s(g.group_id).into();
            l.protocol_type = s(g.protocol_type);
            if version >= 4 {
                l.group_state = s(g.state);
            }
            if version >= 5 {
                l.group_type = s(g.group_type);
            }
            l
        })
        .collect();
    resp
}

/// DescribeGroups.
pub fn describe_groups(
    broker: &Arc<Services>,
    r: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    resp.groups = r
        .groups
        .iter()
        .map(|id| {
            let mut g = describe_groups_response::DescribedGroup::default();
            g.group_id = id.clone();
            if let Err(e) = broker.groups.owns(id) {
                g.error_code = code(e);
                return g;
            }
            let d = broker.groups.describe(id);
            g.group_state = s(d.state);
            g.protocol_type = s(d.protocol_type);
            g.protocol_data = s(d.protocol);
            g.members = d
                .members
                .into_iter()
                .map(|m| {
                    let mut dm = describe_groups_response::DescribedGroupMember::default();
                    dm.member_id = s(m.member_id);
                    if version >= 4 {
                        dm.group_instance_id = m.instance_id.map(s);
                    }
                    dm.client_id = s(m.client_id);
                    dm.client_host = s(m.client_host);
                    dm.member_metadata = m.metadata;
                    dm.member_assignment = m.assignment;
                    dm
                })
                .collect();
            g
        })
        .collect();
    resp
}

/// DeleteGroups.
pub async fn delete_groups(broker: &Arc<Services>, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for id in &r.groups_names {
        let mut d = delete_groups_response::DeletableGroupResult::default();
        d.group_id = id.clone();
        if let Err(e) = broker.groups.owns(id) {
            d.error_code = code(e);
        } else if let Err(e) = broker.groups.delete_group(id).await {
            d.error_code = e.code();
        }
        resp.results.push(d);
    }
    resp
}

/// OffsetDelete.
pub async fn offset_delete(broker: &Arc<Services>, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let topics: Vec<(String, Vec<i32>)> = r
        .topics
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let mut resp = OffsetDeleteResponse::default();
    let deleted = match broker.groups.owns(&r.group_id) {
        Ok(()) => broker.groups.delete_offsets(&r.group_id, topics).await,
        Err(e) => Err(BrokerError::from(e)),
    };
    match deleted {
        Ok(out) => {
            resp.topics = out
                .into_iter()
                .map(|(name, parts)| {
                    let mut t = offset_delete_response::OffsetDeleteResponseTopic::default();
                    t.name = s(name).into();
                    t.partitions = parts
                        .into_iter()
                        .map(|(p, res)| {
                            let mut rp =
                                offset_delete_response::OffsetDeleteResponsePartition::default();
                            rp.partition_index = p;
                            rp.error_code = res.err().map(|e| e.code()).unwrap_or(0);
                            rp
                        })
                        .collect();
                    t
                })
                .collect();
        }
        Err(e) => resp.error_code = e.code(),
    }
    resp
}

fn topic_partitions_by_name(
    broker: &Arc<Services>,
    tps: &[consumer_group_heartbeat_request::TopicPartitions],
) -> TopicPartitions {
    tps.iter()
        .filter_map(|tp| {
            let t = broker.topic_by_id(tp.topic_id)?;
            Some((t.name, tp.partitions.iter().copied().collect()))
        })
        .collect()
}

/// ConsumerGroupHeartbeat (KIP-848): topic ids <-> names, then [`crate::group::GroupCoordinator`].
pub async fn consumer_group_heartbeat(
    broker: &Arc<Services>,
    r: ConsumerGroupHeartbeatRequest,
    client: &Client,
) -> ConsumerGroupHeartbeatResponse {
    let req = ConsumerHeartbeat {
        member_id: r.member_id.to_string(),
        member_epoch: r.member_epoch,
        instance_id: opt(&r.instance_id),
        rack_id: opt(&r.rack_id),
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        subscribed: r
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        assignor: opt(&r.server_assignor),
        owned: r
            .topic_partitions
            .as_ref()
            .map(|tps| topic_partitions_by_name(broker, tps)),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
    };
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    let beat = match broker.groups.owns(&r.group_id) {
        Ok(()) => broker.groups.consumer_heartbeat(&r.group_id, req).await,
        Err(e) => Err(e),
    };
    match beat {
        Ok(out) => {
            resp.member_id = Some(s(out.member_id));
            resp.member_epoch = out.member_epoch;
            resp.heartbeat_interval_ms = out.heartbeat_interval_ms;
            resp.assignment = out.assignment.map(|a| {
                let mut asg = consumer_group_heartbeat_response::Assignment::default();
                asg.topic_partitions = a
                    .into_iter()
                    .filter_map(|(topic, parts)| {
                        let mut tp = consumer_group_heartbeat_response::TopicPartitions::default();
                        tp.topic_id = broker.topic(&topic)?.id;
                        tp.partitions = parts.into_iter().collect();
                        Some(tp)
                    })
                    .collect();
                asg
            });
        }
        Err(e) => {
            let (error_code, error_message) = error_parts(&BrokerError::from(e));
            resp.error_code = error_code;
            resp.error_message = error_message;
        }
    }
    resp
}

fn describe_assignment(
    broker: &Arc<Services>,
    a: &TopicPartitions,
) -> consumer_group_describe_response::Assignment {
    let mut out = consumer_group_describe_response::Assignment::default();
    out.topic_partitions = a
        .iter()
        .filter(|(_, ps)| !ps.is_empty())
        .filter_map(|(topic, ps)| {
            let mut tp = consumer_group_describe_response::TopicPartitions::default();
            tp.topic_id = broker.topic(topic)?.id;
            tp.topic_name = s(topic.clone()).into();
            tp.partitions = ps.iter().copied().collect();
            Some(tp)
        })
        .collect();
    out
}

/// ConsumerGroupDescribe (KIP-848).
pub fn consumer_group_describe(
    broker: &Arc<Services>,
    r: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let mut resp = ConsumerGroupDescribeResponse::default();
    resp.groups = r
        .group_ids
        .iter()
        .map(|id| {
            let mut g = consumer_group_describe_response::DescribedGroup::default();
            g.group_id = id.clone();
            g.authorized_operations = i32::MIN;
            match broker
                .groups
                .owns(id)
                .and_then(|()| broker.groups.consumer_describe(id))
            {
                Ok(d) => {
                    g.group_state = s(d.state);
                    g.group_epoch = d.epoch;
                    g.assignment_epoch = d.assignment_epoch;
                    g.assignor_name = s(d.assignor);
                    g.members = d
                        .members
                        .iter()
                        .map(|(m, target)| {
                            let mut dm = consumer_group_describe_response::Member::default();
                            dm.member_id = s(m.id.clone());
                            dm.instance_id = m.instance_id.clone().map(s);
                            dm.rack_id = m.rack_id.clone().map(s);
                            dm.member_epoch = m.epoch;
                            dm.client_id = s(m.client_id.clone());
                            dm.client_host = s(m.client_host.clone());
                            dm.subscribed_topic_names =
                                m.subscribed.iter().map(|t| s(t.clone()).into()).collect();
                            dm.assignment = describe_assignment(broker, &m.assigned);
                            dm.target_assignment = describe_assignment(broker, target);
                            if version >= 1 {
                                dm.member_type = 1;
                            }
                            dm
                        })
                        .collect();
                }
                Err(e) => {
                    let (error_code, error_message) = error_parts(&BrokerError::from(e));
                    g.error_code = error_code;
                    g.error_message = error_message;
                }
            }
            g
        })
        .collect();
    resp
}
