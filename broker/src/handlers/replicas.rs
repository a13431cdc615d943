//! ElectLeaders (preferred leader election; RFC 0006 "Leadership balance"), and
//! AlterPartitionReassignments / ListPartitionReassignments (RFC 0006 "Reassignment").
//!
//! Leadership belongs to the partitions' Raft groups, so a preferred election asks each
//! partition's current leader to transfer leadership to the preferred replica (the first in the
//! replica set) when that replica is live and in sync, then waits (bounded by the request's
//! timeout) until the new leader reported. An unclean election is refused: a Raft group elects
//! among replicas with the whole committed log only.

use std::sync::Arc;
use std::time::Duration;

use controller::state::{Command, CommandError, Outcome, ReassignmentChange};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::command_error;

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

/// AlterPartitionReassignments (KIP-455, v1 with KIP-860's replication factor guard): records the
/// target replicas (or cancels, with null replicas) in the metadata; the partitions' leaders then
/// move them (`cluster::reassign`). Answers once the metadata holds the change.
pub(super) async fn alter_partition_reassignments(
    svc: &Arc<Services>,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let view = svc.view();
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    // (response topic index, partition index) of each change, in command order.
    let mut slots: Vec<(usize, usize)> = Vec::new();
    let mut changes = Vec::new();
    let mut topics = Vec::new();
    for t in req.topics {
        let mut out = ReassignableTopicResponse::default();
        out.name = t.name.clone();
        let topic = view.topics.get(t.name.0.as_str());
        for p in t.partitions {
            let mut r = ReassignablePartitionResponse::default();
            r.partition_index = p.partition_index;
            let state = topic.and_then(|tv| {
                usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| tv.states.get(i))
            });
            match (topic, state) {
                (Some(tv), Some(st)) => {
                    let target: Option<Vec<i32>> =
                        p.replicas.map(|rs| rs.into_iter().map(|b| b.0).collect());
                    let current_rf = st
                        .reassignment
                        .as_ref()
                        .map_or(st.replicas.len(), |(original, _)| original.len());
                    if let Some(t) = &target {
                        if t.is_empty() {
                            r.error_code = ResponseError::InvalidReplicaAssignment.code();
                            r.error_message =
                                Some(StrBytes::from_static_str("the target replica set is empty"));
                        } else if !allow_rf_change && t.len() != current_rf {
                            r.error_code = ResponseError::InvalidReplicationFactor.code();
                            r.error_message = Some(StrBytes::from_string(format!(
                                "the target has {} replicas, the partition {current_rf}, and allow_replication_factor_change is false",
                                t.len()
                            )));
                        }
                    }
                    if r.error_code == 0 {
                        slots.push((topics.len(), out.partitions.len()));
                        changes.push(ReassignmentChange {
                            topic_id: tv.id,
                            partition: p.partition_index,
                            target,
                        });
                    }
                }
                _ => {
                    r.error_code = ResponseError::UnknownTopicOrPartition.code();
                }
            }
            out.partitions.push(r);
        }
        topics.push(out);
    }
    let mut resp = AlterPartitionReassignmentsResponse::default();
    resp.allow_replication_factor_change = allow_rf_change;
    if !changes.is_empty() {
        match svc
            .cluster
            .write(Command::AlterReassignments { changes })
            .await
        {
            Ok(Outcome::Reassignments { errors }) => {
                for ((ti, pi), e) in slots.into_iter().zip(errors) {
                    if let Some(e) = e {
                        let r = &mut topics[ti].partitions[pi];
                        r.error_code = match &e {
                            CommandError::NoReassignmentInProgress { .. } => {
                                ResponseError::NoReassignmentInProgress.code()
                            }
                            _ => command_error(e.clone()).code(),
                        };
                        r.error_message = Some(StrBytes::from_string(e.to_string()));
                    }
                }
                tracing::info!("partition reassignments recorded");
            }
            Ok(other) => {
                resp.error_code = ResponseError::UnknownServerError.code();
                resp.error_message = Some(StrBytes::from_string(format!(
                    "unexpected outcome {other:?}"
                )));
            }
            Err(e) => {
                resp.error_code = e.code();
                resp.error_message = Some(StrBytes::from_string(e.to_string()));
            }
        }
    }
    resp.responses = topics;
    resp
}

/// ListPartitionReassignments: the reassignments in progress (all, or of the named partitions),
/// with Kafka's adding (target minus original) and removing (original minus target) replicas.
pub(super) fn list_partition_reassignments(
    svc: &Arc<Services>,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let view = svc.view();
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let mut topics = Vec::new();
    for t in view.topics.values() {
        let only: Option<&Vec<i32>> = match &wanted {
            None => None,
            Some(w) => match w.iter().find(|(n, _)| *n == t.name) {
                Some((_, ps)) => Some(ps),
                None => continue,
            },
        };
        let mut out = OngoingTopicReassignment::default();
        out.name = TopicName(StrBytes::from_string(t.name.clone()));
        for (i, st) in t.states.iter().enumerate() {
            let Ok(index) = i32::try_from(i) else {
                continue;
            };
            if only.is_some_and(|ps| !ps.contains(&index)) {
                continue;
            }
            let Some((original, target)) = &st.reassignment else {
                continue;
            };
            let mut p = OngoingPartitionReassignment::default();
            p.partition_index = index;
            p.replicas = st.replicas.iter().map(|b| BrokerId(*b)).collect();
            p.adding_replicas = target
                .iter()
                .filter(|b| !original.contains(b))
                .map(|b| BrokerId(*b))
                .collect();
            p.removing_replicas = original
                .iter()
                .filter(|b| !target.contains(b))
                .map(|b| BrokerId(*b))
                .collect();
            out.partitions.push(p);
        }
        if !out.partitions.is_empty() {
            topics.push(out);
        }
    }
    let mut resp = ListPartitionReassignmentsResponse::default();
    resp.topics = topics;
    resp
}
