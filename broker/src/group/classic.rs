//! The classic (JoinGroup/SyncGroup) group state machine, as Apache Kafka runs it.
//!
//! States: `Empty` -> `PreparingRebalance` (members (re)join) -> `CompletingRebalance` (the leader's
//! assignment is awaited) -> `Stable`; `Dead` after deletion. Every method takes the current time in
//! milliseconds, so the machine is driven by an injected clock and has no I/O or timers of its own:
//! the coordinator calls [`Group::tick`] periodically to fire deadlines (initial rebalance delay,
//! rebalance timeout, session expiry, sync timeout). Replies to JoinGroup and SyncGroup calls that must
//! wait for other members are delivered through oneshot channels held by the members.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::consumer::ConsumerGroup;
use super::offsets::CommittedOffset;
use crate::error::GroupError;

/// Kafka's `group.min.session.timeout.ms` default.
pub const MIN_SESSION_TIMEOUT_MS: i32 = 6_000;
/// Kafka's `group.max.session.timeout.ms` default.
pub const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

/// A group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (possibly committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state (ListGroups, DescribeGroups).
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

/// Coordinator settings the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
}

/// What JoinGroup answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinOutcome {
    /// The generation formed.
    pub generation: i32,
    /// Protocol type (e.g. `consumer`).
    pub protocol_type: Option<String>,
    /// The protocol (assignor) chosen.
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// The member id of the joiner.
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader must not compute a new assignment (static leader rejoin, KIP-814).
    pub skip_assignment: bool,
}

/// What SyncGroup answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncOutcome {
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Protocol chosen.
    pub protocol: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

/// Result delivered to a JoinGroup caller.
pub type JoinResult = Result<JoinOutcome, (GroupError, String)>;
/// Result delivered to a SyncGroup caller.
pub type SyncResult = Result<SyncOutcome, GroupError>;

/// An answer now, or later through the channel.
#[derive(Debug)]
pub enum Reply<T> {
    /// Answer available immediately.
    Now(T),
    /// Answer arrives when the rebalance step completes.
    Wait(oneshot::Receiver<T>),
}

/// A JoinGroup request as the state machine sees it.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// Member id given (empty for a new member).
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client id (DescribeGroups).
    pub client_id: String,
    /// Client host (DescribeGroups).
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (v0: the session timeout).
    pub rebalance_timeout_ms: i32,
    /// Protocol type.
    pub protocol_type: String,
    /// Supported protocols in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member must first obtain its id (KIP-394).
    pub require_known_member_id: bool,
}

/// One member of a classic group.
#[derive(Debug)]
pub struct Member {
    /// Member id.
    pub id: String,
    /// group.instance.id for static members.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Supported protocols with metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Current assignment.
    pub assignment: Bytes,
    last_seen_ms: i64,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    /// Metadata this member sent for `protocol`.
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn awaiting(&self) -> bool {
        self.join_waiter.is_some() || self.sync_waiter.is_some()
    }
}

/// A member as persisted and replayed (no live channels).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredMember {
    /// Member id.
    pub id: String,
    /// group.instance.id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Subscription (metadata for the chosen protocol).
    pub subscription: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// Group metadata as persisted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredGroup {
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Generation.
    pub generation: i32,
    /// Leader member id.
    pub leader: Option<String>,
    /// Members.
    pub members: Vec<StoredMember>,
    /// A KIP-848 (`consumer` type) group: `protocol` is its assignor, `generation` its group epoch
    /// and each member's subscription its topic names separated by newlines.
    pub consumer: bool,
}

/// One consumer group: membership state machine plus committed offsets.
#[derive(Debug)]
pub struct Group {
    /// Group id.
    pub id: String,
    /// Current state.
    pub state: GroupState,
    /// Protocol type of the members (`consumer`, `connect`, ...).
    pub protocol_type: Option<String>,
    /// Protocol chosen at the last completed join.
    pub protocol: Option<String>,
    /// Generation id.
    pub generation: i32,
    /// Leader member id.
    pub leader: Option<String>,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    pub static_members: HashMap<String, String>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// When the group last changed state (offset retention for Empty groups).
    pub state_since_ms: i64,
    /// The KIP-848 state when this is a `consumer` type group (then the classic part is Empty).
    pub consumer: Option<ConsumerGroup>,
    pending: HashMap<String, i64>,
    join_deadline_ms: Option<i64>,
    initial_delay: Option<(i64, i64)>,
    sync_deadline_ms: Option<i64>,
    dirty: bool,
}

fn new_member_id(prefix: &str) -> String {
    let p = if prefix.is_empty() { "member" } else { prefix };
    format!("{p}-{}", uuid::Uuid::new_v4())
}

impl Group {
    /// A new, empty group.
    pub fn new(id: impl Into<String>, now: i64) -> Self {
        Self {
            id: id.into(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            offsets: BTreeMap::new(),
            state_since_ms: now,
            consumer: None,
            pending: HashMap::new(),
            join_deadline_ms: None,
            initial_delay: None,
            sync_deadline_ms: None,
            dirty: false,
        }
    }

    /// Restores a group from its persisted metadata: it comes back Empty (members must rejoin) but
    /// keeps its generation and protocol type.
    pub fn restore(&mut self, stored: &StoredGroup, now: i64) {
        self.generation = stored.generation;
        self.protocol_type = Some(stored.protocol_type.clone()).filter(|s| !s.is_empty());
        self.state = GroupState::Empty;
        self.state_since_ms = now;
        self.consumer = stored
            .consumer
            .then(|| ConsumerGroup::new(stored.generation));
    }

    /// The persistable view of the group.
    pub fn stored(&self) -> StoredGroup {
        if let Some(c) = &self.consumer {
            return StoredGroup {
                protocol_type: "consumer".into(),
                protocol: Some(c.assignor()),
                generation: c.epoch,
                leader: None,
                members: c
                    .members
                    .values()
                    .map(|m| StoredMember {
                        id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        session_timeout_ms: 0,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        subscription: Bytes::from(
                            m.subscribed.iter().cloned().collect::<Vec<_>>().join("\n"),
                        ),
                        assignment: Bytes::new(),
                    })
                    .collect(),
                consumer: true,
            };
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            consumer: false,
        }
    }

    /// True once since the last call if membership metadata changed and should be persisted.
    pub fn take_dirty(&mut self) -> bool {
        let consumer = self
            .consumer
            .as_mut()
            .is_some_and(ConsumerGroup::take_dirty);
        std::mem::take(&mut self.dirty) || consumer
    }

    /// Whether the group has members of either protocol.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
            || self
                .consumer
                .as_ref()
                .is_some_and(|c| !c.members.is_empty())
    }

    /// Kafka's state name for either protocol.
    pub fn state_name(&self) -> &'static str {
        match &self.consumer {
            Some(c) if self.state != GroupState::Dead => c.state_name(),
            _ => self.state.name(),
        }
    }

    fn set_state(&mut self, state: GroupState, now: i64) {
        if self.state != state {
            self.state = state;
            self.state_since_ms = now;
        }
    }

    /// Handles JoinGroup.
    pub fn join(&mut self, req: JoinRequest, now: i64, cfg: &GroupConfig) -> Reply<JoinResult> {
        let err = |e: GroupError, id: &str| Reply::Now(Err((e, id.to_string())));
        if self.state == GroupState::Dead {
            return err(GroupError::CoordinatorNotAvailable, &req.member_id);
        }
        // A KIP-848 group with members refuses classic members; an empty one turns classic.
        if let Some(c) = &self.consumer {
            if !c.members.is_empty() {
                return err(GroupError::InconsistentGroupProtocol, &req.member_id);
            }
            self.consumer = None;
            self.protocol_type = None;
            self.dirty = true;
        }
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&req.session_timeout_ms) {
            return err(GroupError::InvalidSessionTimeout, &req.member_id);
        }
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || !self.supports(&req.protocol_type, &req.protocols)
        {
            return err(GroupError::InconsistentGroupProtocol, &req.member_id);
        }
        if req.member_id.is_empty() {
            if let Some(iid) = req.instance_id.clone() {
                if let Some(old) = self.static_members.get(&iid).cloned() {
                    if self.members.contains_key(&old) {
                        return self.replace_static(old, req, now, cfg);
                    }
                }
                let id = new_member_id(&iid);
                return self.add_member(id, req, now, cfg);
            }
            let id = new_member_id(&req.client_id);
            if req.require_known_member_id {
                let session = i64::from(req.session_timeout_ms);
                self.pending.insert(id.clone(), now + session);
                return err(GroupError::MemberIdRequired, &id);
            }
            return self.add_member(id, req, now, cfg);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member(id, req, now, cfg);
        }
        if !self.members.contains_key(&req.member_id) {
            return err(GroupError::UnknownMemberId, &req.member_id);
        }
        if let Some(iid) = &req.instance_id {
            if self.static_members.get(iid) != Some(&req.member_id) {
                return err(GroupError::FencedInstanceId, &req.member_id);
            }
        }
        self.rejoin(req, now)
    }

    /// Whether a member with these protocols can join: same type and one protocol in common with all.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn add_member(
        &mut self,
        id: String,
        req: JoinRequest,
        now: i64,
        cfg: &GroupConfig,
    ) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(iid) = &req.instance_id {
            self.static_members.insert(iid.clone(), id.clone());
        }
        self.protocol_type = Some(req.protocol_type.clone());
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_seen_ms: now,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        match self.state {
            GroupState::Empty => {
                self.prepare_rebalance(now);
                let hard = now + i64::from(req.rebalance_timeout_ms.max(0));
                let first = (now + cfg.initial_rebalance_delay_ms).min(hard);
                if cfg.initial_rebalance_delay_ms > 0 {
                    self.initial_delay = Some((first, hard));
                }
            }
            GroupState::PreparingRebalance => {
                if let Some((deadline, hard)) = self.initial_delay {
                    let extended = (now + cfg.initial_rebalance_delay_ms).min(hard);
                    self.initial_delay = Some((deadline.max(extended), hard));
                }
            }
            GroupState::CompletingRebalance | GroupState::Stable => self.prepare_rebalance(now),
            GroupState::Dead => {}
        }
        self.try_complete_join(now);
        Reply::Wait(rx)
    }

    fn replace_static(
        &mut self,
        old: String,
        req: JoinRequest,
        now: i64,
        cfg: &GroupConfig,
    ) -> Reply<JoinResult> {
        let Some(mut member) = self.members.remove(&old) else {
            return self.add_member(new_member_id(&req.client_id), req, now, cfg);
        };
        if let Some(tx) = member.join_waiter.take() {
            let _ = tx.send(Err((GroupError::FencedInstanceId, old.clone())));
        }
        if let Some(tx) = member.sync_waiter.take() {
            let _ = tx.send(Err(GroupError::FencedInstanceId));
        }
        let iid = req.instance_id.clone().unwrap_or_default();
        let id = new_member_id(&iid);
        let protocols_same = member.protocols == req.protocols;
        member.id = id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        // Protocols are updated by `rejoin`, which compares them to decide on a rebalance.
        member.last_seen_ms = now;
        self.members.insert(id.clone(), member);
        self.static_members.insert(iid, id.clone());
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(id.clone());
        }
        self.dirty = true;
        if self.state == GroupState::Stable && protocols_same {
            // KIP-345: the replacement takes over the old member's assignment, no rebalance.
            return Reply::Now(Ok(self.current_outcome(&id, true)));
        }
        let mut req = req;
        req.member_id = id;
        self.rejoin(req, now)
    }

    fn rejoin(&mut self, req: JoinRequest, now: i64) -> Reply<JoinResult> {
        let id = req.member_id.clone();
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let Some(member) = self.members.get_mut(&id) else {
            return Reply::Now(Err((GroupError::UnknownMemberId, id)));
        };
        let changed = member.protocols != req.protocols;
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.last_seen_ms = now;
        match self.state {
            GroupState::Stable if !changed && !is_leader => {
                return Reply::Now(Ok(self.current_outcome(&id, false)));
            }
            GroupState::CompletingRebalance if !changed => {
                return Reply::Now(Ok(self.current_outcome(&id, false)));
            }
            _ => {}
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&id) {
            m.join_waiter = Some(tx);
        }
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
        Reply::Wait(rx)
    }

    fn current_outcome(&self, member_id: &str, skip_assignment: bool) -> JoinOutcome {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinOutcome {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.member_list()
            } else {
                Vec::new()
            },
            skip_assignment: skip_assignment && is_leader,
        }
    }

    fn member_list(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect()
    }

    fn prepare_rebalance(&mut self, now: i64) {
        tracing::debug!(group = %self.id, state = self.state.name(), "preparing rebalance");
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(tx) = m.sync_waiter.take() {
                    let _ = tx.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0);
        self.join_deadline_ms = Some(now + timeout);
        self.sync_deadline_ms = None;
        self.set_state(GroupState::PreparingRebalance, now);
    }

    fn try_complete_join(&mut self, now: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some((deadline, _)) = self.initial_delay {
            if now < deadline {
                return;
            }
            self.initial_delay = None;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if all_joined && self.pending.is_empty() {
            self.complete_join(now);
        }
    }

    /// Kafka's rule: among the protocols every member supports, each member votes for its most
    /// preferred one; the most votes wins (ties go to the first candidate in the leader's order).
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| &p == n))
            })
            .collect();
        let mut votes: Vec<(&String, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| *c == name) {
                    v.1 += 1;
                }
            }
        }
        let mut best: Option<(&String, usize)> = None;
        for (c, n) in votes {
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((c, n));
            }
        }
        best.map(|(c, _)| c.clone())
    }

    fn complete_join(&mut self, now: i64) {
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in absent {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.join_deadline_ms = None;
        self.initial_delay = None;
        self.generation += 1;
        self.dirty = true;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now);
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now);
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = self.protocol.as_deref().unwrap_or(""),
            "group joined; awaiting the leader's assignment"
        );
        let timeout = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0);
        self.sync_deadline_ms = Some(now + timeout);
        let list = self.member_list();
        let leader = self.leader.clone().unwrap_or_default();
        for m in self.members.values_mut() {
            m.last_seen_ms = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.join_waiter.take() {
                let _ = tx.send(Ok(JoinOutcome {
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        list.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                }));
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(tx) = m.join_waiter.take() {
                let _ = tx.send(Err((GroupError::UnknownMemberId, id.to_string())));
            }
            if let Some(tx) = m.sync_waiter.take() {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
            if let Some(iid) = &m.instance_id {
                if self.static_members.get(iid).map(String::as_str) == Some(id) {
                    self.static_members.remove(iid);
                }
            }
            self.dirty = true;
        }
    }

    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if let Some(iid) = instance_id {
            if let Some(current) = self.static_members.get(iid) {
                if current != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles SyncGroup; `assignments` is what the leader sends.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> Reply<SyncResult> {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Reply::Now(Err(e));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Reply::Now(Err(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => Reply::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable => {
                let assignment = self
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Reply::Now(Ok(self.sync_outcome(assignment)))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.sync_waiter = Some(tx);
                    m.last_seen_ms = now;
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.sync_deadline_ms = None;
                    self.set_state(GroupState::Stable, now);
                    self.dirty = true;
                    let outcome = self.sync_outcome(Bytes::new());
                    for m in self.members.values_mut() {
                        m.last_seen_ms = now;
                        if let Some(tx) = m.sync_waiter.take() {
                            let _ = tx.send(Ok(SyncOutcome {
                                assignment: m.assignment.clone(),
                                ..outcome.clone()
                            }));
                        }
                    }
                }
                Reply::Wait(rx)
            }
        }
    }

    fn sync_outcome(&self, assignment: Bytes) -> SyncOutcome {
        SyncOutcome {
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment,
        }
    }

    /// Handles Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<(), GroupError> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Err(GroupError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id, generation)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen_ms = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Handles one member of LeaveGroup (by member id, or by instance id for static members).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> Result<(), GroupError> {
        let id = match instance_id {
            Some(iid) => {
                let current = self
                    .static_members
                    .get(iid)
                    .cloned()
                    .ok_or(GroupError::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != current {
                    return Err(GroupError::FencedInstanceId);
                }
                current
            }
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return Ok(());
        }
        if !self.members.contains_key(&id) {
            return Err(GroupError::UnknownMemberId);
        }
        self.remove_member(&id);
        self.after_removal(now);
        Ok(())
    }

    fn after_removal(&mut self, now: i64) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
    }

    /// Fires due deadlines: initial delay, rebalance and sync timeouts, session expiry, pending
    /// member expiry.
    pub fn tick(&mut self, now: i64) {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting() && now - m.last_seen_ms > i64::from(m.session_timeout_ms))
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                self.remove_member(id);
            }
            self.after_removal(now);
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline_ms.is_some_and(|d| now >= d)
        {
            let absent: Vec<String> = self
                .members
                .values()
                .filter(|m| m.sync_waiter.is_none())
                .map(|m| m.id.clone())
                .collect();
            for id in absent {
                self.remove_member(&id);
            }
            self.prepare_rebalance(now);
        }
        if self.state == GroupState::PreparingRebalance {
            if self.join_deadline_ms.is_some_and(|d| now >= d)
                && self.initial_delay.is_none_or(|(d, _)| now >= d)
            {
                self.complete_join(now);
            } else {
                self.try_complete_join(now);
            }
        }
    }

    /// Checks an OffsetCommit's membership fields (classic rules).
    pub fn validate_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if let Some(c) = &self.consumer {
            return c.validate_member(member_id, generation);
        }
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        self.check_member(member_id, instance_id, generation)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Whether a member's subscription (consumer protocol) names `topic`.
    pub fn subscribed_to(&self, topic: &str) -> bool {
        if let Some(c) = &self.consumer {
            return c.subscribed_to(topic);
        }
        let Some(protocol) = &self.protocol else {
            return false;
        };
        self.members.values().any(|m| {
            super::offsets::subscription_topics(&m.metadata_for(protocol))
                .iter()
                .any(|t| t == topic)
        })
    }

    /// Answers every pending JoinGroup and SyncGroup with `e` (broker shutdown); membership is kept.
    pub fn abort_waiters(&mut self, e: GroupError) {
        for m in self.members.values_mut() {
            if let Some(tx) = m.join_waiter.take() {
                let _ = tx.send(Err((e, m.id.clone())));
            }
            if let Some(tx) = m.sync_waiter.take() {
                let _ = tx.send(Err(e));
            }
        }
    }

    /// Marks the group deleted, failing every waiter.
    pub fn kill(&mut self, now: i64) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.remove_member(&id);
        }
        self.set_state(GroupState::Dead, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: GroupConfig = GroupConfig {
        initial_rebalance_delay_ms: 0,
    };

    fn req(member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.to_string(),
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
            ..Default::default()
        }
    }

    fn now_result(r: Reply<JoinResult>) -> JoinResult {
        match r {
            Reply::Now(r) => r,
            Reply::Wait(mut rx) => rx.try_recv().expect("join completed"),
        }
    }

    /// KIP-394 round trip, then the join itself; returns the member id.
    fn join_new(g: &mut Group, now: i64, protocols: &[&str]) -> (String, Reply<JoinResult>) {
        let Reply::Now(Err((GroupError::MemberIdRequired, id))) =
            g.join(req("", protocols), now, &CFG)
        else {
            panic!("expected MEMBER_ID_REQUIRED");
        };
        let r = g.join(req(&id, protocols), now, &CFG);
        (id, r)
    }

    fn sync_all(g: &mut Group, ids: &[String], now: i64) {
        let leader = g.leader.clone().expect("leader");
        let gen = g.generation;
        let assignments: Vec<(String, Bytes)> = ids
            .iter()
            .map(|i| (i.clone(), Bytes::from(format!("a-{i}"))))
            .collect();
        let mut rxs = Vec::new();
        for id in ids.iter().filter(|i| **i != leader) {
            rxs.push(g.sync(id, None, gen, vec![], now));
        }
        rxs.push(g.sync(&leader, None, gen, assignments, now));
        for r in rxs {
            match r {
                Reply::Now(r) => assert!(r.is_ok()),
                Reply::Wait(mut rx) => assert!(rx.try_recv().expect("synced").is_ok()),
            }
        }
        assert_eq!(g.state, GroupState::Stable);
    }

    #[test]
    fn single_member_joins_syncs_and_heartbeats() {
        let mut g = Group::new("g", 0);
        let (id, r) = join_new(&mut g, 0, &["range"]);
        let out = now_result(r).expect("joined");
        assert_eq!(out.generation, 1);
        assert_eq!(out.leader, id);
        assert_eq!(out.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.heartbeat(&id, None, 1, 10), Ok(()));
        sync_all(&mut g, std::slice::from_ref(&id), 10);
        assert_eq!(
            g.heartbeat(&id, None, 0, 20),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("nobody", None, 1, 20),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(g.validate_commit(&id, None, 1), Ok(()));
        assert_eq!(
            g.validate_commit(&id, None, 2),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.validate_commit("", None, -1),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn second_member_triggers_rebalance_and_both_get_the_new_generation() {
        let mut g = Group::new("g", 0);
        let (a, r) = join_new(&mut g, 0, &["range"]);
        now_result(r).expect("a joined");
        sync_all(&mut g, std::slice::from_ref(&a), 0);
        let (b, rb) = join_new(&mut g, 100, &["range"]);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(matches!(rb, Reply::Wait(_)));
        assert_eq!(
            g.heartbeat(&a, None, 1, 150),
            Err(GroupError::RebalanceInProgress)
        );
        let ra = g.join(req(&a, &["range"]), 200, &CFG);
        let oa = now_result(ra).expect("a rejoined");
        let ob = now_result(rb).expect("b joined");
        assert_eq!(oa.generation, 2);
        assert_eq!(ob.generation, 2);
        assert_eq!(oa.leader, a, "the old leader stays leader");
        assert_eq!(oa.members.len(), 2);
        assert!(ob.members.is_empty());
        sync_all(&mut g, &[a, b], 300);
    }

    #[test]
    fn leave_rebalances_and_last_leave_empties_the_group() {
        let mut g = Group::new("g", 0);
        let (a, ra) = join_new(&mut g, 0, &["range"]);
        now_result(ra).expect("a");
        let (b, rb) = join_new(&mut g, 0, &["range"]);
        // a must rejoin for the second generation.
        let ra = g.join(req(&a, &["range"]), 0, &CFG);
        now_result(ra).expect("a");
        now_result(rb).expect("b");
        sync_all(&mut g, &[a.clone(), b.clone()], 0);
        assert_eq!(g.leave(&b, None, 10), Ok(()));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let ra = g.join(req(&a, &["range"]), 20, &CFG);
        assert_eq!(now_result(ra).expect("a").generation, 3);
        assert_eq!(g.leave(&a, None, 30), Ok(()));
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.leave(&a, None, 30), Err(GroupError::UnknownMemberId));
        assert_eq!(g.validate_commit("", None, -1), Ok(()));
    }

    #[test]
    fn session_expiry_removes_a_silent_member() {
        let mut g = Group::new("g", 0);
        let (a, ra) = join_new(&mut g, 0, &["range"]);
        now_result(ra).expect("a");
        let (b, rb) = join_new(&mut g, 0, &["range"]);
        now_result(g.join(req(&a, &["range"]), 0, &CFG)).expect("a");
        now_result(rb).expect("b");
        sync_all(&mut g, &[a.clone(), b.clone()], 0);
        // a heartbeats, b stays silent past its 10 s session.
        for t in (1_000..=11_000).step_by(1_000) {
            let _ = g.heartbeat(&a, None, g.generation, t);
            g.tick(t);
        }
        assert!(!g.members.contains_key(&b));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let out = now_result(g.join(req(&a, &["range"]), 11_100, &CFG)).expect("a");
        assert_eq!(out.members.len(), 1);
    }

    #[test]
    fn rebalance_timeout_drops_members_that_do_not_rejoin() {
        let mut g = Group::new("g", 0);
        let (a, ra) = join_new(&mut g, 0, &["range"]);
        now_result(ra).expect("a");
        let (b, rb) = join_new(&mut g, 0, &["range"]);
        now_result(g.join(req(&a, &["range"]), 0, &CFG)).expect("a");
        now_result(rb).expect("b");
        sync_all(&mut g, &[a.clone(), b.clone()], 0);
        let (_c, rc) = join_new(&mut g, 1_000, &["range"]);
        let ra = g.join(req(&a, &["range"]), 1_000, &CFG);
        assert!(matches!(ra, Reply::Wait(_)), "b has not rejoined yet");
        // b keeps heartbeating but never rejoins; the 30 s rebalance timeout drops it.
        for t in (2_000..=32_000).step_by(1_000) {
            let gen = g.generation;
            let _ = g.heartbeat(&b, None, gen, t);
            g.tick(t);
        }
        assert!(!g.members.contains_key(&b));
        let oc = now_result(rc).expect("c joined");
        assert_eq!(oc.generation, 3);
        assert_eq!(now_result(ra).expect("a joined").generation, 3);
        assert_eq!(g.members.len(), 2);
    }

    #[test]
    fn protocol_selection_follows_member_votes() {
        let mut g = Group::new("g", 0);
        let cfg = GroupConfig {
            initial_rebalance_delay_ms: 1_000,
        };
        let mut rxs = Vec::new();
        for protos in [
            &["roundrobin", "range"][..],
            &["range", "roundrobin"],
            &["range", "roundrobin", "sticky"],
        ] {
            let Reply::Now(Err((_, id))) = g.join(req("", protos), 0, &cfg) else {
                panic!("member id required");
            };
            rxs.push(g.join(req(&id, protos), 0, &cfg));
        }
        assert_eq!(
            g.state,
            GroupState::PreparingRebalance,
            "initial delay holds the join"
        );
        assert!(
            matches!(
                g.join(req("", &["sticky"]), 0, &cfg),
                Reply::Now(Err((GroupError::InconsistentGroupProtocol, _)))
            ),
            "a member without a common protocol is refused"
        );
        assert_eq!(g.members.len(), 3);
        g.tick(1_000);
        assert_eq!(g.protocol.as_deref(), Some("range"));
        for r in rxs {
            assert_eq!(now_result(r).expect("joined").generation, 1);
        }
    }

    #[test]
    fn inconsistent_protocol_is_refused() {
        let mut g = Group::new("g", 0);
        let (_a, ra) = join_new(&mut g, 0, &["range"]);
        now_result(ra).expect("a");
        let r = g.join(req("", &["roundrobin"]), 0, &CFG);
        assert!(matches!(
            r,
            Reply::Now(Err((GroupError::InconsistentGroupProtocol, _)))
        ));
    }

    #[test]
    fn static_member_rejoin_keeps_assignment_without_rebalance() {
        let mut g = Group::new("g", 0);
        let mut sreq = req("", &["range"]);
        sreq.instance_id = Some("i1".into());
        let out = now_result(g.join(sreq.clone(), 0, &CFG)).expect("static joins without KIP-394");
        let old = out.member_id.clone();
        let (b, rb) = join_new(&mut g, 0, &["range"]);
        let mut rejoin = sreq.clone();
        rejoin.member_id = old.clone();
        now_result(g.join(rejoin, 0, &CFG)).expect("a");
        now_result(rb).expect("b");
        sync_all(&mut g, &[old.clone(), b.clone()], 0);
        let gen = g.generation;
        // Restart: same instance id, no member id.
        let out = now_result(g.join(sreq, 1_000, &CFG)).expect("replaced");
        assert_ne!(out.member_id, old);
        assert_eq!(out.generation, gen);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(
            g.heartbeat(&old, Some("i1"), gen, 1_000),
            Err(GroupError::FencedInstanceId)
        );
        let Reply::Now(Ok(s)) = g.sync(&out.member_id, Some("i1"), gen, vec![], 1_000) else {
            panic!("stable sync answers at once");
        };
        assert_eq!(s.assignment, Bytes::from(format!("a-{old}")));
        // Restarting with different protocols does rebalance.
        let mut changed = req("", &["range", "roundrobin"]);
        changed.instance_id = Some("i1".into());
        assert!(matches!(g.join(changed, 2_000, &CFG), Reply::Wait(_)));
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn unknown_member_and_bad_session_timeout() {
        let mut g = Group::new("g", 0);
        assert!(matches!(
            g.join(req("ghost", &["range"]), 0, &CFG),
            Reply::Now(Err((GroupError::UnknownMemberId, _)))
        ));
        let mut r = req("", &["range"]);
        r.session_timeout_ms = 10;
        assert!(matches!(
            g.join(r, 0, &CFG),
            Reply::Now(Err((GroupError::InvalidSessionTimeout, _)))
        ));
    }
}
