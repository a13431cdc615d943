//! ElectLeaders (preferred leader election; RFC 0006 "Leadership balance").
//!
//! Leadership belongs to the partitions' Raft groups, so a preferred election asks each
//! partition's current leader to transfer leadership to the preferred replica (the first in the
//! replica set) when that replica is live and in sync, then waits (bounded by the request's
//! timeout) until the new leader reported. An unclean election is refused: a Raft group elects
//! among replicas with the whole committed log only.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::replication::types::GroupId;
use crate::services::Services;

/// Longest wait for elections, whatever the request asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub(super) async fn elect_leaders(
    svc: &Arc<Services>,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let view = svc.view();
    let wanted: Vec<(String, Vec<i32>)> = match req.topic_partitions {
        Some(tps) => tps
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None => view
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partitions).collect()))
            .collect(),
    };
    let wait =
        Duration::from_millis(u64::try_from(req.timeout_ms.max(0)).unwrap_or(0)).min(MAX_WAIT);
    let mut results = Vec::new();
    // First ask every leader, then wait for all of them together.
    let mut pending: Vec<(usize, usize, String, i32, i32)> = Vec::new();
    for (name, partitions) in wanted {
        let mut r = ReplicaElectionResult::default();
        r.topic = TopicName(StrBytes::from_string(name.clone()));
        for index in partitions {
            let mut p = PartitionResult::default();
            p.partition_id = index;
            let code = match (view.topics.get(&name), view.partition(&name, index)) {
                (Some(t), Some(st)) if req.election_type == 0 => {
                    let preferred = st.replicas.first().copied().unwrap_or(-1);
                    if st.leader == preferred {
                        ResponseError::ElectionNotNeeded.code()
                    } else if !view.is_live(preferred) || !st.isr.contains(&preferred) {
                        ResponseError::PreferredLeaderNotAvailable.code()
                    } else if !view.is_live(st.leader) {
                        ResponseError::EligibleLeadersNotAvailable.code()
                    } else {
                        let group = GroupId {
                            topic_id: t.id,
                            partition: index,
                        };
                        let asked = svc
                            .replication
                            .transfer_leadership_via(
                                u64::try_from(st.leader).unwrap_or_default(),
                                group,
                                u64::try_from(preferred).unwrap_or_default(),
                            )
                            .await;
                        match asked {
                            Ok(()) => {
                                pending.push((
                                    results.len(),
                                    r.partition_result.len(),
                                    name.clone(),
                                    index,
                                    preferred,
                                ));
                                0
                            }
                            Err(e) => {
                                p.error_message = Some(StrBytes::from_string(e));
                                ResponseError::PreferredLeaderNotAvailable.code()
                            }
                        }
                    }
                }
                (Some(_), Some(st)) => {
                    if view.is_live(st.leader) {
                        ResponseError::ElectionNotNeeded.code()
                    } else {
                        p.error_message = Some(StrBytes::from_static_str(
                            "unclean elections are not supported: a Raft group elects only replicas holding the committed log",
                        ));
                        ResponseError::EligibleLeadersNotAvailable.code()
                    }
                }
                _ => ResponseError::UnknownTopicOrPartition.code(),
            };
            p.error_code = code;
            r.partition_result.push(p);
        }
        results.push(r);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut reconciled = svc.cluster.subscribe_reconciled();
    loop {
        let view = svc.view();
        pending.retain(|(_, _, name, index, preferred)| {
            view.partition(name, *index).map(|p| p.leader) != Some(*preferred)
        });
        if pending.is_empty() {
            break;
        }
        if tokio::time::timeout_at(deadline, reconciled.changed())
            .await
            .map_or(true, |r| r.is_err())
        {
            break;
        }
    }
    for (ti, pi, _, _, _) in pending {
        let p = &mut results[ti].partition_result[pi];
        p.error_code = ResponseError::RequestTimedOut.code();
        p.error_message = Some(StrBytes::from_static_str(
            "leadership transfer requested; the new leader did not report in time",
        ));
    }
    let mut resp = ElectLeadersResponse::default();
    resp.replica_election_results = results;
    resp
}
