//! One partition's Raft group on this broker: the openraft node, its storage, and what the driver
//! tracks for it (the last contact with its leader, the election deadline, the ISR as its leader
//! sees it).
//!
//! The group's role (server state, term, leader, members) is copied out of openraft's server
//! metrics by a watcher task ([`Group::watch_role`]) whenever openraft reports a change, so the
//! driver's walk over thousands of groups and the request path read one lock in the group instead
//! of openraft's metrics channel (several cold cache lines per group: the dominant idle cost
//! before).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use super::log::ReplicaLog;
use super::state_machine::StateMachine;
use super::types::{GroupId, PartitionRaft};

/// How soon a candidate whose election did not finish tries again.
pub const CANDIDATE_RETRY: std::time::Duration = std::time::Duration::from_millis(300);

/// This node's role in a group, as openraft last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Leader, follower, candidate or learner.
    pub state: ServerState,
    /// The current term (the Kafka leader epoch).
    pub term: u64,
    /// The leader this node knows, if any.
    pub leader: Option<u64>,
    /// Voters of the effective membership, sorted (empty: the group was never initialized).
    pub voters: Vec<u64>,
    /// Every member of the effective membership (voters and learners), sorted.
    pub members: Vec<u64>,
}

impl Role {
    fn from_metrics(
        m: &openraft::metrics::RaftServerMetrics<super::types::PartitionRaftConfig>,
    ) -> Self {
        let membership = m.membership_config.membership();
        Self {
            state: m.state,
            term: m.vote.leader_id.term,
            leader: m.current_leader,
            voters: membership.voter_ids().collect(),
            members: membership.nodes().map(|(id, _)| *id).collect(),
        }
    }
}

/// What the driver saw of a group at its last tick (kept in the group: no map lookup per tick).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Seen {
    /// This node led the group and had applied an entry of its term.
    pub ready: bool,
    /// The term then.
    pub term: u64,
    /// The ISR then (leader only).
    pub isr: Vec<u64>,
}

/// The last time this broker heard from a group's leader.
#[derive(Debug, Clone, Copy)]
pub struct Contact {
    /// The leader.
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// When.
    pub at: Instant,
}

/// How a group is opened here.
#[derive(Debug, Clone)]
pub(crate) struct GroupParams {
    /// The replica set the metadata assigns (the first is the preferred leader).
    pub replicas: Vec<u64>,
    /// The group's share of the randomized election timeout, in [0, 1).
    pub jitter: f64,
    /// Whether this node may initialize the group when no leader reached it (false for a
    /// replica a reassignment adds: the leader makes it a learner).
    pub may_initialize: bool,
}

/// A partition group hosted here.
pub struct Group {
    /// The partition.
    pub id: GroupId,
    /// `topic-partition`.
    pub label: String,
    /// The openraft node.
    pub raft: PartitionRaft,
    /// Its storage.
    pub log: Arc<ReplicaLog>,
    /// Its state machine (snapshot boundary).
    pub sm: StateMachine,
    /// The replica set the metadata assigns (the first is the preferred leader).
    replicas: RwLock<Vec<u64>>,
    /// This node's role, copied from openraft's server metrics.
    role: RwLock<Role>,
    /// The driver's view at its last tick.
    seen: Mutex<Seen>,
    contact: Mutex<Option<Contact>>,
    /// This group's share of the randomized election timeout, in [0, 1).
    jitter: f64,
    /// When this node last started an election (or initialized the group).
    last_attempt: Mutex<Option<Instant>>,
    /// When the group was opened here.
    opened: Instant,
    /// Leader side: follower -> when its log last reached the leader's log end.
    caught_up: Mutex<HashMap<u64, Instant>>,
    /// Leader side: the leader's last log index at the previous driver tick.
    last_target: Mutex<Option<u64>>,
    /// Leader side: the ISR of the last update.
    isr: Mutex<Vec<u64>>,
    /// Whether this node may initialize the group when no leader reached it (false for a
    /// replica a reassignment adds: the leader makes it a learner).
    may_initialize: bool,
    /// Stops the group's flusher.
    pub cancel: CancellationToken,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("label", &self.label).finish()
    }
}

impl Group {
    /// A group over `log` (its label names the group), as `params` describe it.
    pub(crate) fn new(
        id: GroupId,
        raft: PartitionRaft,
        log: Arc<ReplicaLog>,
        sm: StateMachine,
        params: GroupParams,
        cancel: CancellationToken,
    ) -> Self {
        let GroupParams {
            replicas,
            jitter,
            may_initialize,
        } = params;
        let role = Role::from_metrics(&raft.server_metrics().borrow_watched());
        Self {
            id,
            label: log.label().to_string(),
            role: RwLock::new(role),
            seen: Mutex::new(Seen::default()),
            raft,
            log,
            sm,
            replicas: RwLock::new(replicas),
            contact: Mutex::new(None),
            jitter,
            last_attempt: Mutex::new(None),
            opened: Instant::now(),
            caught_up: Mutex::new(HashMap::new()),
            last_target: Mutex::new(None),
            isr: Mutex::new(Vec::new()),
            may_initialize,
            cancel,
        }
    }

    /// Whether this node may initialize the group (see [`GroupParams`]).
    pub fn may_initialize(&self) -> bool {
        self.may_initialize
    }

    /// The replica set from the metadata.
    pub fn replicas(&self) -> Vec<u64> {
        self.replicas.read().clone()
    }

    /// Takes a new replica set from the metadata.
    pub fn set_replicas(&self, replicas: Vec<u64>) {
        *self.replicas.write() = replicas;
    }

    /// Records contact with the leader `leader` of `term`.
    pub fn record_contact(&self, leader: u64, term: u64) {
        let mut c = self.contact.lock();
        if c.is_none_or(|c| term >= c.term) {
            *c = Some(Contact {
                leader,
                term,
                at: Instant::now(),
            });
        }
    }

    /// The last contact with a leader.
    pub fn contact(&self) -> Option<Contact> {
        *self.contact.lock()
    }

    /// Whether this broker heard from a live leader other than `candidate` within `lease`.
    pub fn leader_lease_held(
        &self,
        candidate: u64,
        lease: Duration,
        fenced: &BTreeSet<u64>,
    ) -> bool {
        self.contact().is_some_and(|c| {
            c.leader != candidate && c.at.elapsed() < lease && !fenced.contains(&c.leader)
        })
    }

    /// Whether this node should start an election (or initialize a pristine group) now: it has
    /// heard from no live leader for its randomized election timeout, and its own last attempt is
    /// at least that long ago.
    ///
    /// A candidate (its last election did not finish, e.g. a new group whose other replicas were
    /// not open yet) retries sooner: after [`CANDIDATE_RETRY`] (jittered).
    pub fn election_due(
        &self,
        timeout: std::time::Duration,
        fenced: &BTreeSet<u64>,
        candidate: bool,
    ) -> bool {
        let mine = timeout.mul_f64(1.0 + self.jitter / 2.0);
        let retry = if candidate {
            CANDIDATE_RETRY.mul_f64(1.0 + self.jitter).min(mine)
        } else {
            mine
        };
        let attempt = *self.last_attempt.lock();
        if candidate && attempt.is_some_and(|at| at.elapsed() >= retry) {
            return true;
        }
        let quiet_since = match self.contact() {
            Some(c) if !fenced.contains(&c.leader) => c.at,
            _ => self.opened,
        };
        quiet_since.elapsed() >= mine && attempt.is_none_or(|at| at.elapsed() >= retry)
    }

    /// Records an election attempt.
    pub fn attempted(&self) {
        *self.last_attempt.lock() = Some(Instant::now());
    }

    /// Keeps [`Group::role`] equal to openraft's server metrics until `cancel` or until the
    /// group's openraft node stops.
    pub async fn watch_role(self: Arc<Self>, cancel: CancellationToken) {
        let mut rx = self.raft.server_metrics();
        loop {
            let role = Role::from_metrics(&rx.borrow_and_update());
            *self.role.write() = role;
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Takes what the driver saw at its last tick.
    pub(crate) fn take_seen(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock())
    }

    /// Keeps what the driver saw at this tick.
    pub(crate) fn put_seen(&self, seen: Seen) {
        *self.seen.lock() = seen;
    }

    /// Reads this node's role (see [`Role`]).
    pub fn with_role<T>(&self, f: impl FnOnce(&Role) -> T) -> T {
        f(&self.role.read())
    }

    /// This node's Raft state, term and known leader.
    pub fn state(&self) -> (ServerState, u64, Option<u64>) {
        self.with_role(|r| (r.state, r.term, r.leader))
    }

    /// The voters of the effective membership, sorted (empty: never initialized).
    pub fn voters(&self) -> Vec<u64> {
        self.with_role(|r| r.voters.clone())
    }

    /// Whether this node leads the group and has applied an entry of its term (so its high
    /// watermark covers everything a previous leader committed).
    pub fn is_ready_leader(&self) -> bool {
        let (state, term, _) = self.state();
        state == ServerState::Leader && self.log.applied_term() == term
    }

    /// Leader side: updates which followers are caught up and returns the ISR: the leader plus
    /// the unfenced followers whose log reached the leader's end within `lag_max`.
    ///
    /// A follower is caught up at a tick when its matched index reaches the leader's last index
    /// of the previous tick (Kafka's lastCaughtUpTime), or, at the first tick of a leadership,
    /// the commit point. A follower never seen caught up is out of the ISR: a replica returning
    /// from a crash joins it only once its log has reached the leader's.
    pub fn update_isr(&self, me: u64, lag_max: Duration, fenced: &BTreeSet<u64>) -> Vec<u64> {
        let voters = self.voters();
        let now = Instant::now();
        let mut target = self.last_target.lock();
        let mut caught = self.caught_up.lock();
        {
            let m = self.raft.data_metrics();
            let m = m.borrow_watched();
            let bar = target.or(m.last_applied.as_ref().map(|l| l.index));
            if let Some(replication) = &m.replication {
                for (follower, matched) in replication.iter() {
                    let index = matched.as_ref().map(|l| l.index);
                    if index.is_some_and(|i| bar.is_none_or(|b| i >= b)) {
                        caught.insert(*follower, now);
                    }
                }
            }
            *target = m.last_log.as_ref().map(|l| l.index);
        }
        caught.retain(|f, _| voters.binary_search(f).is_ok() && !fenced.contains(f));
        let mut isr: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|v| {
                *v == me
                    || caught
                        .get(v)
                        .is_some_and(|at| now.duration_since(*at) < lag_max)
            })
            .collect();
        isr.sort_unstable();
        *self.isr.lock() = isr.clone();
        isr
    }

    /// Leader side: each follower's lag as `(follower, log entries behind the leader's last
    /// entry, time since it was last caught up)` (`None`: never seen caught up).
    pub fn follower_lag(&self) -> Vec<(u64, u64, Option<Duration>)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let last = m.last_log_index.unwrap_or(0);
        let caught = self.caught_up.lock();
        m.replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(f, matched)| {
                        let behind = match matched {
                            Some(l) => last.saturating_sub(l.index),
                            None => last + 1,
                        };
                        (*f, behind, caught.get(f).map(|at| at.elapsed()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ISR of the last [`Group::update_isr`] (empty unless this node leads).
    pub fn isr(&self) -> Vec<u64> {
        self.isr.lock().clone()
    }

    /// Forgets ISR tracking (this node stopped leading).
    pub fn reset_isr(&self) {
        self.caught_up.lock().clear();
        self.isr.lock().clear();
        *self.last_target.lock() = None;
    }
}
