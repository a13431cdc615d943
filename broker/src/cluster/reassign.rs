//! Partition reassignment, the leader's side (AlterPartitionReassignments; RFC 0006
//! "Reassignment").
//!
//! Owns no durable state: the reassignment lives in the metadata (the controller's partition
//! record: original and target replicas), the voter set in the partition's Raft log. Every tick
//! this broker walks the partitions it leads that have a reassignment in progress and moves each
//! one step, so a leader or controller failover simply resumes where the log and metadata are:
//!
//! 1. target replicas that are not yet members of the group are added as learners (openraft then
//!    replicates to them, installing the partition's snapshot first when the entries below its
//!    snapshot boundary are gone: with tiering only the local tail is copied);
//! 2. once every target replica's matched index reached the leader's commit point, the voters
//!    become the target (openraft's joint consensus; replicas that leave are removed from the
//!    group, and a leader that leaves steps down once the change committed, handing leadership
//!    to an up-to-date voter);
//! 3. once the group's committed, uniform membership has exactly the target's voters, the leader
//!    proposes `CompleteReassignment`; the controller makes the target the replica set, and the
//!    brokers that left close and delete their replica (the reconciler's remove transition).
//!
//! Cancelling makes the original set the target again, which the same steps reach.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use controller::state::Command;
use openraft::async_runtime::watch::WatchReceiver;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::link::ClusterLink;
use crate::replication::group::Group;
use crate::replication::types::GroupId;
use crate::replication::Replication;

/// How often reassignments are moved on.
const TICK: Duration = Duration::from_millis(250);

/// What a leader does next for one partition under reassignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Add these target replicas as learners.
    AddLearners(Vec<u64>),
    /// Wait until the learners caught up (or a membership change in flight committed).
    Wait,
    /// Make the target the voter set.
    ChangeVoters(BTreeSet<u64>),
    /// The voters are the target: report completion.
    Complete,
}

/// The next step, from the group's membership as this leader sees it.
///
/// `voters`/`members` are the effective membership's voters and all nodes (voters and learners);
/// `uniform` is false while a joint configuration or an uncommitted change is in flight;
/// `matched` gives a member's matched log index; `committed` is the leader's commit point.
pub fn next_step(
    target: &BTreeSet<u64>,
    voters: &BTreeSet<u64>,
    members: &BTreeSet<u64>,
    uniform: bool,
    matched: impl Fn(u64) -> Option<u64>,
    committed: Option<u64>,
) -> Step {
    if !uniform {
        return Step::Wait;
    }
    if voters == target {
        return Step::Complete;
    }
    let missing: Vec<u64> = target
        .iter()
        .copied()
        .filter(|t| !members.contains(t))
        .collect();
    if !missing.is_empty() {
        return Step::AddLearners(missing);
    }
    let caught_up = target
        .iter()
        .filter(|t| !voters.contains(t))
        .all(|t| matched(*t).is_some_and(|m| committed.is_none_or(|c| m >= c)));
    if caught_up {
        Step::ChangeVoters(target.clone())
    } else {
        Step::Wait
    }
}

/// Moves reassignments on until `cancel`.
pub async fn run(link: Arc<ClusterLink>, replication: Arc<Replication>, cancel: CancellationToken) {
    let me = link.broker_id();
    let busy: Arc<Mutex<BTreeSet<GroupId>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let view = link.view();
        for t in view.topics.values() {
            for (index, st) in t.states.iter().enumerate() {
                let Some((_, target)) = &st.reassignment else {
                    continue;
                };
                if st.leader != me {
                    continue;
                }
                let Ok(partition) = i32::try_from(index) else {
                    continue;
                };
                let id = GroupId {
                    topic_id: t.id,
                    partition,
                };
                let Some(group) = replication.group(id) else {
                    continue;
                };
                if !group.is_ready_leader() || !busy.lock().insert(id) {
                    continue;
                }
                let target: BTreeSet<u64> = target
                    .iter()
                    .filter_map(|b| u64::try_from(*b).ok())
                    .collect();
                let (link, busy) = (link.clone(), busy.clone());
                tokio::spawn(async move {
                    step(&link, &group, target).await;
                    busy.lock().remove(&id);
                });
            }
        }
    }
}

/// One step for one partition this broker leads.
async fn step(link: &ClusterLink, group: &Arc<Group>, target: BTreeSet<u64>) {
    let (voters, members, uniform, matched, committed, term) = {
        let m = group.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
        let uniform = membership.get_joint_config().len() == 1
            && m.membership_config.log_id().as_ref().map(|l| l.index)
                <= m.last_applied.as_ref().map(|l| l.index);
        let matched: Vec<(u64, Option<u64>)> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, l)| (*id, l.as_ref().map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        (
            voters,
            members,
            uniform,
            matched,
            m.last_applied.as_ref().map(|l| l.index),
            m.current_term,
        )
    };
    let me = group.raft.metrics().borrow_watched().id;
    let matched_of = |id: u64| {
        if id == me {
            committed
        } else {
            matched.iter().find(|(i, _)| *i == id).and_then(|(_, m)| *m)
        }
    };
    match next_step(&target, &voters, &members, uniform, matched_of, committed) {
        Step::Wait => {}
        Step::AddLearners(ids) => {
            for id in ids {
                tracing::info!(partition = %group.label, learner = id, "reassignment: adding a learner");
                if let Err(e) = group
                    .raft
                    .add_learner(id, openraft::EmptyNode::default(), false)
                    .await
                {
                    tracing::warn!(partition = %group.label, learner = id, error = %e, "reassignment: cannot add a learner");
                }
            }
        }
        Step::ChangeVoters(voters) => {
            tracing::info!(partition = %group.label, voters = ?voters, "reassignment: changing the voters");
            if let Err(e) = group.raft.change_membership(voters, false).await {
                tracing::warn!(partition = %group.label, error = %e, "reassignment: membership change failed");
            }
        }
        Step::Complete => {
            let command = Command::CompleteReassignment {
                broker_id: link.broker_id(),
                broker_epoch: link.broker_epoch(),
                topic_id: group.id.topic_id,
                partition: group.id.partition,
                leader_epoch: i32::try_from(term).unwrap_or(i32::MAX),
                voters: voters
                    .iter()
                    .filter_map(|v| i32::try_from(*v).ok())
                    .collect(),
            };
            match link.propose(command).await {
                Ok(_) => {
                    tracing::info!(partition = %group.label, voters = ?voters, "reassignment complete");
                }
                Err(e) => {
                    tracing::warn!(partition = %group.label, error = %e, "reassignment: cannot report completion");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_move_adds_learners_then_waits_for_them_then_changes_voters_then_completes() {
        let target = set(&[2, 3, 4]);
        let voters = set(&[1, 2, 3]);
        assert_eq!(
            next_step(&target, &voters, &voters, true, |_| Some(10), Some(10)),
            Step::AddLearners(vec![4])
        );
        let members = set(&[1, 2, 3, 4]);
        assert_eq!(
            next_step(
                &target,
                &voters,
                &members,
                true,
                |id| Some(if id == 4 { 3 } else { 10 }),
                Some(10)
            ),
            Step::Wait,
            "the learner is behind the commit point"
        );
        assert_eq!(
            next_step(&target, &voters, &members, true, |_| Some(10), Some(10)),
            Step::ChangeVoters(target.clone())
        );
        assert_eq!(
            next_step(&target, &voters, &members, false, |_| Some(10), Some(10)),
            Step::Wait,
            "a joint configuration in flight"
        );
        assert_eq!(
            next_step(&target, &target, &target, true, |_| Some(10), Some(10)),
            Step::Complete
        );
    }

    #[test]
    fn shrinking_or_reordering_needs_no_learner() {
        let voters = set(&[1, 2, 3]);
        assert_eq!(
            next_step(&set(&[1, 2]), &voters, &voters, true, |_| None, Some(5)),
            Step::ChangeVoters(set(&[1, 2]))
        );
        assert_eq!(
            next_step(&set(&[3, 2, 1]), &voters, &voters, true, |_| None, Some(5)),
            Step::Complete
        );
    }
}
