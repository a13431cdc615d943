//! The KIP-848 consumer group state machine (ConsumerGroupHeartbeat), as Kafka 4.x runs it.
//!
//! The group epoch bumps on every change of membership, subscriptions or the partition counts of
//! subscribed topics; the target assignment is then recomputed at once by the server-side assignor
//! (`assignor.rs`), so the assignment epoch always equals the group epoch. Each member reconciles
//! towards its target on its own heartbeats:
//!
//! 1. partitions it owns but no longer targets are revoked first: its assignment shrinks, it keeps its
//!    epoch, and the revoked partitions still count as owned by it until a heartbeat reports
//!    (`topic_partitions`) that it dropped them, or its rebalance timeout removes it;
//! 2. then it moves to the group epoch and receives every target partition that no other member owns;
//!    partitions still owned elsewhere are withheld and added on a later heartbeat once released.
//!
//! Pure: time is a parameter, no I/O. The coordinator fires deadlines with [`ConsumerGroup::tick`].

use std::collections::{BTreeMap, BTreeSet};

use super::assignor::{self, AssignorMember, TopicPartitions};
use crate::error::GroupError;

/// Epoch sent by a member that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Epoch sent by a static member that leaves temporarily (KIP-848).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Broker settings of consumer groups.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 5_000,
            session_timeout_ms: 45_000,
        }
    }
}

/// One ConsumerGroupHeartbeat, with topic ids already resolved to names.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    /// Member id (empty in v0 on the first heartbeat).
    pub member_id: String,
    /// The member's epoch: 0 joins, -1 leaves, -2 leaves a static member temporarily.
    pub member_epoch: i32,
    /// group.instance.id.
    pub instance_id: Option<String>,
    /// Rack id.
    pub rack_id: Option<String>,
    /// Rebalance timeout, -1 if unchanged.
    pub rebalance_timeout_ms: i32,
    /// Subscribed topics, `None` if unchanged.
    pub subscribed: Option<BTreeSet<String>>,
    /// Server assignor, `None` if unchanged.
    pub assignor: Option<String>,
    /// Partitions the member owns, `None` if unchanged.
    pub owned: Option<TopicPartitions>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
}

/// What ConsumerGroupHeartbeat answers.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatOutcome {
    /// Member id.
    pub member_id: String,
    /// The member's epoch after this heartbeat.
    pub member_epoch: i32,
    /// Interval until the next heartbeat.
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, when it must be sent.
    pub assignment: Option<TopicPartitions>,
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerMember {
    /// Member id.
    pub id: String,
    /// group.instance.id.
    pub instance_id: Option<String>,
    /// Rack id.
    pub rack_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscribed topic names.
    pub subscribed: BTreeSet<String>,
    /// Requested server assignor.
    pub assignor: Option<String>,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Current member epoch (-2 while a static member is away).
    pub epoch: i32,
    /// Epoch before the last advance (a retried heartbeat may still carry it).
    pub previous_epoch: i32,
    /// Partitions currently given to the member.
    pub assigned: TopicPartitions,
    /// Partitions the member must revoke; still owned by it until it reports otherwise.
    pub revoking: TopicPartitions,
    session_deadline_ms: i64,
    revoke_deadline_ms: Option<i64>,
}

/// The KIP-848 part of a group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumerGroup {
    /// Group epoch.
    pub epoch: i32,
    /// Epoch of the target assignment (equal to the group epoch once computed).
    pub assignment_epoch: i32,
    /// Members by id.
    pub members: BTreeMap<String, ConsumerMember>,
    /// Target assignment by member.
    pub target: BTreeMap<String, TopicPartitions>,
    /// Partition counts of subscribed topics at the last target computation.
    pub topics: BTreeMap<String, i32>,
    dirty: bool,
}

fn is_empty(tp: &TopicPartitions) -> bool {
    tp.values().all(BTreeSet::is_empty)
}

fn minus(a: &TopicPartitions, b: &TopicPartitions) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for (t, ps) in a {
        let rest: BTreeSet<i32> = match b.get(t) {
            Some(bs) => ps.difference(bs).copied().collect(),
            None => ps.clone(),
        };
        if !rest.is_empty() {
            out.insert(t.clone(), rest);
        }
    }
    out
}

fn intersect(a: &TopicPartitions, b: &TopicPartitions) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for (t, ps) in a {
        if let Some(bs) = b.get(t) {
            let both: BTreeSet<i32> = ps.intersection(bs).copied().collect();
            if !both.is_empty() {
                out.insert(t.clone(), both);
            }
        }
    }
    out
}

fn overlaps(a: &TopicPartitions, b: &TopicPartitions) -> bool {
    !is_empty(&intersect(a, b))
}

impl ConsumerGroup {
    /// A new empty consumer group at `epoch`.
    pub fn new(epoch: i32) -> Self {
        Self {
            epoch,
            assignment_epoch: epoch,
            ..Default::default()
        }
    }

    /// True once since the last call if membership changed and should be persisted.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Kafka's state name: Empty, Reconciling (some member is not at the target) or Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.members.values().all(|m| {
            m.epoch == self.assignment_epoch
                && is_empty(&m.revoking)
                && m.assigned == self.target.get(&m.id).cloned().unwrap_or_default()
        }) {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// Every topic some member subscribes to (plus `extra`).
    pub fn subscribed_topics(&self, extra: Option<&BTreeSet<String>>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect();
        if let Some(e) = extra {
            out.extend(e.iter().cloned());
        }
        out
    }

    /// The assignor in force: the first one named by a member (Kafka picks the most requested),
    /// `uniform` by default.
    pub fn assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .map(|(name, _)| name.to_string())
            .unwrap_or_else(|| assignor::UNIFORM.to_string())
    }

    fn bump(&mut self, topics: &BTreeMap<String, i32>) {
        self.epoch += 1;
        self.dirty = true;
        let subscribed = self.subscribed_topics(None);
        self.topics = topics
            .iter()
            .filter(|(t, _)| subscribed.contains(*t))
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        let members: BTreeMap<String, AssignorMember> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    AssignorMember {
                        subscribed: m.subscribed.clone(),
                        previous: self.target.get(&m.id).cloned().unwrap_or_default(),
                    },
                )
            })
            .collect();
        self.target = assignor::assign(&self.assignor(), &members, &self.topics);
        self.assignment_epoch = self.epoch;
    }

    fn remove_member(&mut self, id: &str, topics: &BTreeMap<String, i32>) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.bump(topics);
        }
    }

    fn owned_by_others(&self, id: &str) -> TopicPartitions {
        let mut out = TopicPartitions::new();
        for m in self.members.values().filter(|m| m.id != id) {
            for src in [&m.assigned, &m.revoking] {
                for (t, ps) in src {
                    out.entry(t.clone()).or_default().extend(ps.iter().copied());
                }
            }
        }
        out
    }

    /// Handles one heartbeat. `topics` holds the partition count of every existing topic the group
    /// (including this request) subscribes to.
    pub fn heartbeat(
        &mut self,
        req: HeartbeatRequest,
        topics: &BTreeMap<String, i32>,
        cfg: &ConsumerConfig,
        now: i64,
    ) -> Result<HeartbeatOutcome, GroupError> {
        if let Some(a) = &req.assignor {
            if !assignor::is_supported(a) {
                return Err(GroupError::UnsupportedAssignor);
            }
        }
        let leave = |id: String, epoch: i32| HeartbeatOutcome {
            member_id: id,
            member_epoch: epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        };
        if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            if !self.members.contains_key(&req.member_id) {
                return Err(GroupError::UnknownMemberId);
            }
            let is_static = self.members[&req.member_id].instance_id.is_some();
            if req.member_epoch == STATIC_LEAVE_EPOCH && is_static {
                // Kept (with its assignment) until its session expires or the instance rejoins.
                let m = self.members.get_mut(&req.member_id).expect("checked");
                m.epoch = STATIC_LEAVE_EPOCH;
                self.dirty = true;
            } else {
                self.remove_member(&req.member_id, topics);
            }
            return Ok(leave(req.member_id, req.member_epoch));
        }
        let mut changed = false;
        let member_id = if req.member_epoch == 0 {
            let mut id = req.member_id.clone();
            if id.is_empty() {
                id = uuid::Uuid::new_v4().to_string();
            }
            // A static instance coming back takes over its previous member (same assignment).
            let replaced = req.instance_id.as_ref().and_then(|iid| {
                self.members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(iid) && m.id != id)
                    .map(|m| (m.id.clone(), m.epoch))
            });
            if let Some((old, epoch)) = replaced {
                if epoch != STATIC_LEAVE_EPOCH {
                    return Err(GroupError::UnreleasedInstanceId);
                }
                let mut m = self.members.remove(&old).expect("found above");
                let target = self.target.remove(&old).unwrap_or_default();
                m.id = id.clone();
                m.epoch = self.assignment_epoch;
                self.target.insert(id.clone(), target);
                self.members.insert(id.clone(), m);
                self.dirty = true;
            } else if self.members.contains_key(&id) {
                // Rejoin after being fenced: start over without assignment.
                let m = self.members.get_mut(&id).expect("checked");
                m.assigned.clear();
                m.revoking.clear();
                m.epoch = 0;
                m.previous_epoch = 0;
            } else {
                self.members.insert(
                    id.clone(),
                    ConsumerMember {
                        id: id.clone(),
                        instance_id: req.instance_id.clone(),
                        rack_id: req.rack_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        subscribed: BTreeSet::new(),
                        assignor: None,
                        rebalance_timeout_ms: 300_000,
                        epoch: 0,
                        previous_epoch: 0,
                        assigned: TopicPartitions::new(),
                        revoking: TopicPartitions::new(),
                        session_deadline_ms: 0,
                        revoke_deadline_ms: None,
                    },
                );
                changed = true;
            }
            id
        } else {
            let m = self
                .members
                .get(&req.member_id)
                .ok_or(GroupError::UnknownMemberId)?;
            if req.member_epoch > m.epoch {
                return Err(GroupError::FencedMemberEpoch);
            }
            if req.member_epoch < m.epoch {
                // A lost response: the member may only lag by one epoch and own nothing new.
                let ok = req.member_epoch == m.previous_epoch
                    && req
                        .owned
                        .as_ref()
                        .is_none_or(|o| is_empty(&minus(o, &m.assigned)));
                if !ok {
                    return Err(GroupError::FencedMemberEpoch);
                }
            }
            req.member_id.clone()
        };
        let full =
            req.rebalance_timeout_ms != -1 && req.subscribed.is_some() && req.owned.is_some();
        let before = self.members[&member_id].assigned.clone();
        {
            let m = self.members.get_mut(&member_id).expect("present");
            m.session_deadline_ms = now + i64::from(cfg.session_timeout_ms);
            if req.rebalance_timeout_ms > 0 {
                m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            }
            if let Some(s) = &req.subscribed {
                if *s != m.subscribed {
                    m.subscribed = s.clone();
                    changed = true;
                }
            }
            if let Some(a) = &req.assignor {
                if m.assignor.as_ref() != Some(a) {
                    m.assignor = Some(a.clone());
                    changed = true;
                }
            }
            if req.rack_id.is_some() {
                m.rack_id = req.rack_id.clone();
            }
        }
        let current: BTreeMap<String, i32> = self
            .subscribed_topics(None)
            .into_iter()
            .filter_map(|t| topics.get(&t).map(|n| (t, *n)))
            .collect();
        if changed || current != self.topics {
            self.bump(topics);
        }
        self.reconcile(&member_id, req.owned.as_ref(), now);
        let m = &self.members[&member_id];
        let send = req.member_epoch == 0 || full || m.assigned != before;
        Ok(HeartbeatOutcome {
            member_id: member_id.clone(),
            member_epoch: m.epoch,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            assignment: send.then(|| m.assigned.clone()),
        })
    }

    /// Moves one member towards its target (see the module comment).
    fn reconcile(&mut self, id: &str, owned: Option<&TopicPartitions>, now: i64) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let others = self.owned_by_others(id);
        let epoch = self.assignment_epoch;
        let m = self.members.get_mut(id).expect("present");
        if !is_empty(&m.revoking) {
            match owned {
                Some(o) if !overlaps(o, &m.revoking) => {
                    m.revoking.clear();
                    m.revoke_deadline_ms = None;
                }
                _ => return,
            }
        }
        let to_revoke = minus(&m.assigned, &target);
        if !is_empty(&to_revoke) {
            m.assigned = intersect(&m.assigned, &target);
            m.revoking = to_revoke;
            m.revoke_deadline_ms = Some(now + i64::from(m.rebalance_timeout_ms));
            return;
        }
        let mut next = minus(&target, &others);
        // Keep what it already has (never withheld from itself).
        for (t, ps) in &m.assigned {
            next.entry(t.clone())
                .or_default()
                .extend(ps.iter().copied());
        }
        m.assigned = next.into_iter().filter(|(_, ps)| !ps.is_empty()).collect();
        if m.epoch != epoch {
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
    }

    /// Removes members whose session expired or that did not revoke within their rebalance
    /// timeout. Returns the removed member ids.
    pub fn tick(&mut self, topics: &BTreeMap<String, i32>, now: i64) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now || m.revoke_deadline_ms.is_some_and(|d| d <= now)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id, topics);
        }
        expired
    }

    /// Checks the member fields of an OffsetCommit (v9+) or OffsetFetch (v9+) from this group.
    pub fn validate_member(&self, member_id: &str, epoch: i32) -> Result<(), GroupError> {
        if epoch < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if m.epoch != epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Whether a member subscribes to `topic`.
    pub fn subscribed_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| m.subscribed.contains(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> BTreeMap<String, i32> {
        BTreeMap::from([("t".to_string(), 4)])
    }

    fn join(g: &mut ConsumerGroup, id: &str, now: i64) -> HeartbeatOutcome {
        g.heartbeat(
            HeartbeatRequest {
                member_id: id.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 10_000,
                subscribed: Some(BTreeSet::from(["t".to_string()])),
                owned: Some(TopicPartitions::new()),
                ..Default::default()
            },
            &topics(),
            &ConsumerConfig::default(),
            now,
        )
        .expect("join")
    }

    fn beat(
        g: &mut ConsumerGroup,
        id: &str,
        epoch: i32,
        owned: Option<TopicPartitions>,
        now: i64,
    ) -> Result<HeartbeatOutcome, GroupError> {
        g.heartbeat(
            HeartbeatRequest {
                member_id: id.into(),
                member_epoch: epoch,
                rebalance_timeout_ms: -1,
                owned,
                ..Default::default()
            },
            &topics(),
            &ConsumerConfig::default(),
            now,
        )
    }

    fn count(tp: &Option<TopicPartitions>) -> usize {
        tp.as_ref()
            .map(|t| t.values().map(BTreeSet::len).sum())
            .unwrap_or(0)
    }

    #[test]
    fn partition_is_withheld_until_the_previous_owner_revokes_it() {
        let mut g = ConsumerGroup::new(0);
        let a = join(&mut g, "a", 0);
        assert_eq!(a.member_epoch, 1);
        assert_eq!(count(&a.assignment), 4);
        let a_owned = a.assignment.clone().expect("assignment");

        // b joins: epoch 2; b's target partitions are still owned by a, so b gets nothing yet.
        let b = join(&mut g, "b", 10);
        assert_eq!(b.member_epoch, 2);
        assert_eq!(count(&b.assignment), 0);
        assert_eq!(g.state_name(), "Reconciling");

        // a must revoke two partitions and stays at epoch 1 until it reports them gone.
        let a2 = beat(&mut g, "a", 1, None, 20).expect("hb");
        assert_eq!(a2.member_epoch, 1);
        assert_eq!(count(&a2.assignment), 2);
        let kept = a2.assignment.clone().expect("assignment");
        let a3 = beat(&mut g, "a", 1, Some(a_owned), 30).expect("hb");
        assert_eq!(a3.member_epoch, 1, "still owns revoked partitions");
        let b2 = beat(&mut g, "b", 2, Some(TopicPartitions::new()), 40).expect("hb");
        assert_eq!(count(&b2.assignment), 0, "withheld");

        let a4 = beat(&mut g, "a", 1, Some(kept), 50).expect("hb");
        assert_eq!(a4.member_epoch, 2);
        let b3 = beat(&mut g, "b", 2, Some(TopicPartitions::new()), 60).expect("hb");
        assert_eq!(count(&b3.assignment), 2);
        assert_eq!(g.state_name(), "Stable");
    }

    #[test]
    fn epochs_are_fenced() {
        let mut g = ConsumerGroup::new(0);
        join(&mut g, "a", 0);
        assert_eq!(
            beat(&mut g, "a", 5, None, 1),
            Err(GroupError::FencedMemberEpoch)
        );
        assert_eq!(
            beat(&mut g, "zz", 1, None, 1),
            Err(GroupError::UnknownMemberId)
        );
        join(&mut g, "b", 2);
        // a is at epoch 1 and must revoke; b at 2. An epoch older than the previous one is fenced.
        assert_eq!(
            beat(&mut g, "b", 1, Some(TopicPartitions::new()), 3).map(|o| o.member_epoch),
            Err(GroupError::FencedMemberEpoch)
        );
        assert_eq!(g.validate_member("a", 1), Ok(()));
        assert_eq!(g.validate_member("a", 2), Err(GroupError::StaleMemberEpoch));
        assert_eq!(g.validate_member("", -1), Err(GroupError::UnknownMemberId));
        assert_eq!(
            beat(&mut g, "a", LEAVE_EPOCH, None, 4).map(|o| o.member_epoch),
            Ok(-1)
        );
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn session_and_rebalance_timeouts_remove_members() {
        let mut g = ConsumerGroup::new(0);
        join(&mut g, "a", 0);
        join(&mut g, "b", 1_000);
        // a must revoke (rebalance timeout 10 s) but stays silent; b keeps heartbeating.
        beat(&mut g, "a", 1, None, 2_000).expect("hb");
        assert!(g.tick(&topics(), 5_000).is_empty());
        beat(&mut g, "b", 2, None, 11_000).expect("hb");
        assert_eq!(g.tick(&topics(), 12_001), vec!["a".to_string()]);
        let b = beat(&mut g, "b", 2, Some(TopicPartitions::new()), 12_002).expect("hb");
        assert_eq!(b.member_epoch, 3);
        assert_eq!(count(&b.assignment), 4);
        // b's session (45 s) expires.
        assert_eq!(g.tick(&topics(), 12_002 + 45_000), vec!["b".to_string()]);
        assert_eq!(g.state_name(), "Empty");
    }

    #[test]
    fn static_member_leaving_temporarily_is_taken_over_by_its_instance() {
        let mut g = ConsumerGroup::new(0);
        let req = |id: &str, epoch: i32| HeartbeatRequest {
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: Some("i1".into()),
            rebalance_timeout_ms: 10_000,
            subscribed: Some(BTreeSet::from(["t".to_string()])),
            owned: Some(TopicPartitions::new()),
            ..Default::default()
        };
        let cfg = ConsumerConfig::default();
        let a = g.heartbeat(req("a", 0), &topics(), &cfg, 0).expect("join");
        join(&mut g, "b", 1);
        let epoch = g.epoch;
        // A second live holder of the instance id is refused.
        assert_eq!(
            g.heartbeat(req("x", 0), &topics(), &cfg, 2),
            Err(GroupError::UnreleasedInstanceId)
        );
        let left = g
            .heartbeat(req("a", STATIC_LEAVE_EPOCH), &topics(), &cfg, 3)
            .expect("leave");
        assert_eq!(left.member_epoch, STATIC_LEAVE_EPOCH);
        assert_eq!(g.epoch, epoch, "no rebalance");
        let back = g
            .heartbeat(req("a2", 0), &topics(), &cfg, 4)
            .expect("rejoin");
        assert_eq!(g.epoch, epoch, "still no rebalance");
        assert!(!g.members.contains_key("a"));
        assert_eq!(back.member_epoch, epoch);
        assert!(count(&back.assignment) <= count(&a.assignment));
    }

    #[test]
    fn new_partitions_bump_the_epoch() {
        let mut g = ConsumerGroup::new(0);
        join(&mut g, "a", 0);
        let more = BTreeMap::from([("t".to_string(), 6)]);
        let out = g
            .heartbeat(
                HeartbeatRequest {
                    member_id: "a".into(),
                    member_epoch: 1,
                    rebalance_timeout_ms: -1,
                    ..Default::default()
                },
                &more,
                &ConsumerConfig::default(),
                1,
            )
            .expect("hb");
        assert_eq!(out.member_epoch, 2);
        assert_eq!(count(&out.assignment), 6);
    }
}
