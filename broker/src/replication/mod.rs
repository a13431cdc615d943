//! Partition replication on openraft (RFC 0006, `docs/rfcs/0006-partition-replication.md`).
//!
//! Every partition replica is one openraft node of its partition's group; the Raft log is the
//! partition log. This module owns the groups of this broker ([`Replication`]), their storage
//! (`log`, `log_store`, `state_machine`, `snapshot`), the transport between brokers (`wire`,
//! `transport`) and the driver that replaces openraft's per-group timers (`driver`).
//!
//! | file | owns |
//! | --- | --- |
//! | `types.rs` | openraft type config, the entry payload, control entries |
//! | `log.rs` | a replica's storage: segment log, Raft files, group commit, high watermark, proposals |
//! | `log_store.rs` | openraft's log storage over it |
//! | `state_machine.rs` | openraft's state machine over it; snapshots |
//! | `snapshot.rs` | the snapshot format |
//! | `wire.rs` | transport frames |
//! | `transport.rs` | connections per broker pair, openraft's network, the server |
//! | `group.rs` | one group: node, storage, contact, ISR |
//! | `driver.rs` | heartbeats, elections, leader readiness, ISR reports |

pub mod driver;
pub mod group;
pub mod log;
pub mod log_store;
pub mod snapshot;
pub mod state_machine;
pub mod transport;
pub mod types;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::raft::{SnapshotResponse, TransferLeaderRequest, VoteRequest, VoteResponse};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::group::Group;
use self::log::ReplicaLog;
use self::log_store::LogStore;
use self::snapshot::SnapshotData;
use self::state_machine::StateMachine;
use self::transport::{Dispatch, GroupNetwork, Transport};
use self::types::{GroupId, PartitionRaft, PartitionRaftConfig, SnapshotMeta, Vote};
use self::wire::{Frame, Heartbeat, Kind};
use crate::error::BrokerError;

/// Timing of the replication layer.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationSettings {
    /// How often leaders send coalesced heartbeats.
    pub heartbeat_interval: Duration,
    /// A follower that heard nothing from its leader for this long (randomized up to twice as
    /// long) starts an election; also the leader lease.
    pub election_timeout: Duration,
    /// `replica.lag.time.max.ms`: a follower is out of the ISR after this long behind.
    pub lag_max: Duration,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(500),
            election_timeout: Duration::from_millis(2000),
            lag_max: Duration::from_millis(30_000),
        }
    }
}

/// The replication runtime of one broker: its groups, the transport, the openraft config.
pub struct Replication {
    node_id: u64,
    settings: ReplicationSettings,
    raft_config: Arc<openraft::Config>,
    transport: Arc<Transport>,
    groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    fenced: RwLock<BTreeSet<u64>>,
    /// Replication endpoints that replace the metadata's (test hook).
    overrides: RwLock<BTreeMap<u64, String>>,
    /// Groups whose leadership the metadata does not show right: the driver reports them again.
    rereport: Mutex<BTreeSet<GroupId>>,
    leaderships_won: std::sync::atomic::AtomicU64,
    /// Last heartbeat answer from each peer.
    peer_acks: Mutex<HashMap<u64, Instant>>,
    /// Bumped whenever a group's leadership here changes (the driver notices it).
    leadership: watch::Sender<u64>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// A fraction in [0, 1) that spreads groups' election timeouts (from the clock's low bits and a
/// counter: enough to keep replicas of one group from campaigning at the same instant).
fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let mixed =
        (nanos ^ SEQ.fetch_add(0x9E37_79B9, Ordering::Relaxed)).wrapping_mul(0x2545_F491_4F6C_DD1D);
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

impl Replication {
    /// The runtime of node `node_id`.
    pub fn new(node_id: u64, settings: ReplicationSettings) -> Result<Arc<Self>, BrokerError> {
        // openraft's leader lease (its election timeouts) is made practically endless: a leader
        // refuses writes once its lease lapses, and with ticks off idle groups would never renew
        // it. The lease that matters is Strata's (the driver's contact times, checked before a
        // vote reaches openraft, which is then told to skip its own), and a leader cut off from
        // its quorum stops serving through `quorum_alive`.
        let config = openraft::Config {
            cluster_name: "strata-partition".into(),
            // Unused for heartbeats (off); openraft times AppendEntries out at 3/4 of it. A
            // short timeout under a burst (thousands of groups electing at once) made openraft
            // resend what the follower was still writing.
            heartbeat_interval: 2_000,
            election_timeout_min: 86_400_000,
            election_timeout_max: 86_400_001,
            enable_tick: false,
            enable_heartbeat: false,
            enable_elect: false,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            replication_lag_threshold: u64::MAX / 2,
            max_payload_entries: 256,
            install_snapshot_timeout: 30_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| BrokerError::InvalidConfig(format!("replication timing: {e}")))?;
        Ok(Arc::new(Self {
            node_id,
            settings,
            raft_config: Arc::new(config),
            transport: Arc::new(Transport::new(node_id)),
            groups: RwLock::new(HashMap::new()),
            fenced: RwLock::new(BTreeSet::new()),
            overrides: RwLock::new(BTreeMap::new()),
            rereport: Mutex::new(BTreeSet::new()),
            leaderships_won: std::sync::atomic::AtomicU64::new(0),
            peer_acks: Mutex::new(HashMap::new()),
            leadership: watch::Sender::new(0),
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The timing settings.
    pub fn settings(&self) -> ReplicationSettings {
        self.settings
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// Serves the replication port until `cancel`.
    pub fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener, cancel: CancellationToken) {
        let dispatch: Arc<dyn Dispatch> = self.clone();
        tokio::spawn(transport::serve(listener, dispatch, cancel));
    }

    /// Takes the peers' replication endpoints and the fenced brokers from the metadata.
    pub fn set_cluster(&self, mut addresses: BTreeMap<u64, String>, fenced: BTreeSet<u64>) {
        for (id, addr) in self.overrides.read().iter() {
            addresses.insert(*id, addr.clone());
        }
        self.transport.set_addresses(addresses);
        *self.fenced.write() = fenced;
    }

    /// Replaces the metadata's endpoints of some peers (a test's fault-injecting proxy).
    pub fn set_overrides(&self, overrides: BTreeMap<u64, String>) {
        *self.overrides.write() = overrides;
    }

    /// The brokers the metadata fences.
    pub fn fenced(&self) -> BTreeSet<u64> {
        self.fenced.read().clone()
    }

    /// Whether the controller fenced broker `id`.
    pub fn is_fenced(&self, id: u64) -> bool {
        self.fenced.read().contains(&id)
    }

    /// A hosted group.
    pub fn group(&self, id: GroupId) -> Option<Arc<Group>> {
        self.groups.read().get(&id).cloned()
    }

    /// Every hosted group.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.groups.read().values().cloned().collect()
    }

    /// A receiver that changes whenever leadership of a group here changes.
    pub fn subscribe_leadership(&self) -> watch::Receiver<u64> {
        self.leadership.subscribe()
    }

    /// Asks the driver to report these groups again if this node leads them (the metadata names
    /// another leader, or none, e.g. after this broker was fenced and unfenced).
    pub fn rereport(&self, groups: impl IntoIterator<Item = GroupId>) {
        self.rereport.lock().extend(groups);
    }

    pub(crate) fn take_rereport(&self) -> BTreeSet<GroupId> {
        std::mem::take(&mut *self.rereport.lock())
    }

    /// Leaderships this node won (a group became a ready leader here) since it started.
    pub fn leaderships_won(&self) -> u64 {
        self.leaderships_won
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a leadership won.
    pub(crate) fn won_leadership(&self) {
        self.leaderships_won
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn leadership_changed(&self) {
        self.leadership.send_modify(|g| *g += 1);
    }

    /// Records a heartbeat answer from `peer`.
    pub(crate) fn peer_answered(&self, peer: u64) {
        self.peer_acks.lock().insert(peer, Instant::now());
    }

    /// Whether this node, leading `group`, heard from a quorum of its voters within the election
    /// timeout (a leader cut off from its quorum stops serving: it could not commit anyway).
    pub fn quorum_alive(&self, group: &Group) -> bool {
        group.with_role(|r| {
            let alive = r.voters.iter().filter(|v| self.peer_alive(**v)).count();
            alive * 2 > r.voters.len()
        })
    }

    /// Whether `peer` answered a heartbeat within the election timeout.
    pub fn peer_alive(&self, peer: u64) -> bool {
        peer == self.node_id
            || self
                .peer_acks
                .lock()
                .get(&peer)
                .is_some_and(|at| at.elapsed() < self.settings.election_timeout)
    }

    /// Opens the group of a partition whose storage is `log`, with the replica set `replicas`
    /// (the first is the preferred leader). A new group is initialized by its preferred replica
    /// at once, by the others only if it still has no leader after an election timeout (the
    /// driver); a log carried over from before replication starts from a snapshot naming the
    /// replica set. With `may_initialize` false (a replica a reassignment is adding) the group is
    /// never initialized here: the leader adds this node as a learner.
    pub async fn open_group(
        self: &Arc<Self>,
        id: GroupId,
        log: Arc<ReplicaLog>,
        replicas: Vec<u64>,
        may_initialize: bool,
    ) -> Result<Arc<Group>, BrokerError> {
        if let Some(g) = self.group(id) {
            return Ok(g);
        }
        let label = log.label().to_string();
        let voters: BTreeSet<u64> = replicas.iter().copied().collect();
        let (purged, last) = {
            let l = log.log().read();
            (l.purged_entry(), l.last_entry())
        };
        if purged.is_some() && log.snapshot().is_none() && may_initialize {
            // Carried over from before replication: the old data is the snapshot's history.
            let start = {
                let l = log.log().read();
                l.entries_start_offset()
            };
            let at = purged.map(types::to_log_id);
            let meta = SnapshotMeta {
                last_log_id: at,
                last_membership: types::StoredMembership::new(
                    at,
                    types::Membership::new_with_defaults(vec![voters.clone()], voters.clone()),
                ),
            };
            let data = SnapshotData {
                version: SnapshotData::VERSION,
                start_offset: start,
                log_start_offset: tiering::PartitionLog::log_start_offset(&*log.log().read()),
                producer_state: None,
                epochs: Vec::new(),
                offloaded_end: None,
            };
            log.set_applied(|a| {
                a.last = at;
                a.membership = meta.last_membership.clone();
            });
            log.flush_applied();
            log.save_snapshot(&meta, &data)?;
        }
        let sm = StateMachine::new(log.clone());
        let raft: PartitionRaft = openraft::Raft::new(
            self.node_id,
            self.raft_config.clone(),
            GroupNetwork::new(id, self.transport.clone()),
            LogStore::new(log.clone()),
            sm.clone(),
        )
        .await
        .map_err(|e| BrokerError::ReplicationUnavailable(format!("{label}: start raft: {e}")))?;
        let pristine = purged.is_none() && last.is_none();
        let preferred = replicas.first() == Some(&self.node_id);
        let cancel = CancellationToken::new();
        let group = Arc::new(Group::new(
            id,
            raft,
            log.clone(),
            sm,
            group::GroupParams {
                replicas,
                jitter: jitter(),
                may_initialize,
            },
            cancel.clone(),
        ));
        tokio::spawn(log.clone().run_flusher(cancel.clone()));
        tokio::spawn(group.clone().watch_role(cancel));
        self.groups.write().insert(id, group.clone());
        if pristine && preferred && may_initialize {
            group.attempted();
            if let Err(e) = group.raft.initialize(voters).await {
                tracing::debug!(partition = %label, error = %e, "group already initialized");
            }
        }
        Ok(group)
    }

    /// Stops a group (its replica was removed or the broker shuts down); its storage stays.
    pub async fn close_group(&self, id: GroupId) {
        let group = self.groups.write().remove(&id);
        if let Some(g) = group {
            g.log.abandon_proposals();
            if let Err(e) = g.raft.shutdown().await {
                tracing::warn!(partition = %g.label, error = %e, "raft did not stop cleanly");
            }
            g.log.flush_applied();
            g.cancel.cancel();
        }
    }

    /// Stops every group.
    pub async fn shutdown(&self) {
        let ids: Vec<GroupId> = self.groups.read().keys().copied().collect();
        for id in ids {
            self.close_group(id).await;
        }
    }

    fn reply<T: serde::Serialize>(r: Result<T, String>) -> Bytes {
        match wire::to_bytes(&r) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                Bytes::from(wire::to_bytes(&Err::<(), String>(e.to_string())).unwrap_or_default())
            }
        }
    }

    async fn handle_frame(self: Arc<Self>, frame: Frame) -> Bytes {
        let mut body = frame.body;
        if frame.kind == Kind::Heartbeat {
            return Self::reply(match wire::from_bytes::<Heartbeat>(&body) {
                Ok(hb) => {
                    let groups = self.groups.read();
                    for (g, term) in hb.leads {
                        if let Some(group) = groups.get(&g) {
                            group.record_contact(hb.from, term);
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            });
        }
        let id = match wire::get_group(&mut body) {
            Ok(id) => id,
            Err(e) => return Self::reply::<()>(Err(e.to_string())),
        };
        let Some(group) = self.group(id) else {
            return Self::reply::<()>(Err(format!(
                "group {id} is not hosted on node {}",
                self.node_id
            )));
        };
        match frame.kind {
            Kind::Append => {
                let req = match wire::decode_append(body) {
                    Ok(r) => r,
                    Err(e) => return Self::reply::<()>(Err(e.to_string())),
                };
                group.record_contact(req.vote.leader_id.voted_for, req.vote.leader_id.term);
                Self::reply(
                    group
                        .raft
                        .append_entries(req)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            Kind::Vote | Kind::PreVote => {
                let mut req: VoteRequest<PartitionRaftConfig> = match wire::from_bytes(&body) {
                    Ok(r) => r,
                    Err(e) => return Self::reply::<()>(Err(e.to_string())),
                };
                let candidate = req.vote.leader_id.voted_for;
                let fenced = self.fenced();
                let healthy_leader = group.state().0 == openraft::ServerState::Leader
                    && self.quorum_alive(&group)
                    && !fenced.contains(&self.node_id);
                if !req.leadership_transfer
                    && (healthy_leader
                        || group.leader_lease_held(
                            candidate,
                            self.settings.election_timeout,
                            &fenced,
                        ))
                {
                    // Strata's lease: this broker heard from a live leader recently.
                    let last = group.log.log().read().last_entry().map(types::to_log_id);
                    let vote = group
                        .log
                        .vote()
                        .unwrap_or_else(|| Vote::new(0, self.node_id));
                    return Self::reply::<VoteResponse<PartitionRaftConfig>>(Ok(
                        VoteResponse::new(vote, last, false),
                    ));
                }
                if frame.kind == Kind::PreVote {
                    // Strata's pre-vote: granted when this node's log is not longer than the
                    // candidate's; nothing changes here (openraft's own pre-vote honours its
                    // lease, which never lapses, so it would always refuse).
                    let last = group.log.log().read().last_entry().map(types::to_log_id);
                    let vote = group
                        .log
                        .vote()
                        .unwrap_or_else(|| Vote::new(0, self.node_id));
                    let granted = req.last_log_id >= last;
                    return Self::reply::<VoteResponse<PartitionRaftConfig>>(Ok(
                        VoteResponse::new(vote, last, granted),
                    ));
                }
                // Strata's lease check replaces openraft's (whose lease never lapses here).
                req.leadership_transfer = true;
                Self::reply(group.raft.vote(req).await.map_err(|e| e.to_string()))
            }
            Kind::Snapshot => {
                let parsed: Result<(Vote, SnapshotMeta, SnapshotData), _> =
                    serde_json::from_slice(&body);
                match parsed {
                    Ok((vote, meta, data)) => {
                        let snapshot = types::Snapshot {
                            meta,
                            snapshot: data,
                        };
                        let r: Result<SnapshotResponse<PartitionRaftConfig>, String> = group
                            .raft
                            .install_full_snapshot(vote, snapshot)
                            .await
                            .map_err(|e| e.to_string());
                        Self::reply(r)
                    }
                    Err(e) => Self::reply::<()>(Err(format!("snapshot: {e}"))),
                }
            }
            Kind::TransferLeader => {
                let req: TransferLeaderRequest<PartitionRaftConfig> = match wire::from_bytes(&body)
                {
                    Ok(r) => r,
                    Err(e) => return Self::reply::<()>(Err(e.to_string())),
                };
                Self::reply(
                    group
                        .raft
                        .handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            Kind::Transfer => {
                let to: u64 = match wire::from_bytes(&body) {
                    Ok(t) => t,
                    Err(e) => return Self::reply::<()>(Err(e.to_string())),
                };
                Self::reply(self.transfer_local(&group, to).await)
            }
            Kind::Heartbeat => Self::reply::<()>(Err("unreachable".into())),
        }
    }

    /// Strata's pre-vote round (Raft thesis 9.6): asks the group's other voters whether they
    /// would vote for this node now (no live leader's lease held there, and this node's log at
    /// least as long as theirs), changing no one's term. Returns whether a quorum, this node
    /// included, would. A replica whose log is behind cannot win, so it must not raise the term
    /// either: without this round it campaigns again and again, each time at a higher term,
    /// and a replica with the longer log never catches up with the term (a livelock seen with a
    /// lagging candidate retrying faster than the others).
    pub async fn pre_vote(self: &Arc<Self>, g: &Group) -> bool {
        let (voters, term) = {
            let m = g.raft.metrics();
            let m = m.borrow_watched();
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            (voters, m.current_term)
        };
        if !voters.contains(&self.node_id) {
            return false;
        }
        let last = g.log.log().read().last_entry().map(types::to_log_id);
        let req: VoteRequest<PartitionRaftConfig> =
            VoteRequest::new(Vote::new(term + 1, self.node_id), last);
        let body = match wire::encode_group_request(g.id, &req) {
            Ok(b) => b.freeze(),
            Err(e) => {
                tracing::warn!(partition = %g.label, error = %e, "cannot encode a pre-vote");
                return false;
            }
        };
        let ttl = self
            .settings
            .heartbeat_interval
            .max(Duration::from_millis(200));
        let asks = voters
            .iter()
            .copied()
            .filter(|v| *v != self.node_id)
            .map(|peer| {
                let body = body.clone();
                let transport = self.transport.clone();
                async move {
                    transport
                        .call::<VoteResponse<PartitionRaftConfig>>(peer, Kind::PreVote, &body, ttl)
                        .await
                        .is_ok_and(|r| r.vote_granted)
                }
            });
        let granted = 1 + futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|g| *g)
            .count();
        let won = granted > voters.len() / 2;
        tracing::debug!(partition = %g.label, granted, voters = voters.len(), won, "pre-vote");
        won
    }

    /// Asks `group`'s Raft leader (this node or another) to hand leadership to `to`; returns once
    /// the leader accepted the request (the transfer itself takes an election round).
    pub async fn transfer_leadership(
        self: &Arc<Self>,
        group: GroupId,
        to: u64,
    ) -> Result<(), String> {
        let g = self
            .group(group)
            .ok_or_else(|| format!("group {group} is not hosted on node {}", self.node_id))?;
        let (state, _, leader) = g.state();
        if state == openraft::ServerState::Leader {
            return self.transfer_local(&g, to).await;
        }
        let leader = leader.ok_or_else(|| format!("{}: no leader known", g.label))?;
        let body = wire::encode_group_request(group, &to).map_err(|e| e.to_string())?;
        self.transport
            .call::<()>(leader, Kind::Transfer, &body, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
    }

    /// Asks broker `leader` (this one or another), which leads `group` as far as the caller
    /// knows, to hand leadership to `to`.
    pub async fn transfer_leadership_via(
        self: &Arc<Self>,
        leader: u64,
        group: GroupId,
        to: u64,
    ) -> Result<(), String> {
        if leader == self.node_id {
            let g = self
                .group(group)
                .ok_or_else(|| format!("group {group} is not hosted on node {}", self.node_id))?;
            return self.transfer_local(&g, to).await;
        }
        let body = wire::encode_group_request(group, &to).map_err(|e| e.to_string())?;
        self.transport
            .call::<()>(leader, Kind::Transfer, &body, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
    }

    async fn transfer_local(&self, g: &Group, to: u64) -> Result<(), String> {
        let (state, _, _) = g.state();
        if state != openraft::ServerState::Leader {
            return Err(format!(
                "{}: node {} does not lead it",
                g.label, self.node_id
            ));
        }
        if to == self.node_id {
            return Ok(());
        }
        let voters: BTreeSet<u64> = {
            let m = g.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config.membership().voter_ids().collect()
        };
        if !voters.contains(&to) {
            return Err(format!("{}: node {to} is not a voter", g.label));
        }
        tracing::info!(partition = %g.label, to, "transferring leadership");
        g.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| e.to_string())
    }

    /// Controlled shutdown: hands every leadership of this node to an in-sync, live replica and
    /// waits (up to `patience`) until this node leads nothing it could hand over.
    pub async fn move_leadership_away(self: &Arc<Self>, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        let mut asked = BTreeSet::new();
        loop {
            let mut leading = 0;
            for g in self.groups() {
                if g.state().0 != openraft::ServerState::Leader {
                    continue;
                }
                let isr = g.update_isr(self.node_id, self.settings.lag_max, &self.fenced());
                let Some(to) = isr
                    .iter()
                    .copied()
                    .find(|r| *r != self.node_id && self.peer_alive(*r))
                else {
                    continue;
                };
                leading += 1;
                if asked.insert(g.id) {
                    if let Err(e) = self.transfer_local(&g, to).await {
                        tracing::debug!(partition = %g.label, error = %e, "cannot hand over leadership");
                    }
                }
            }
            if leading == 0 || tokio::time::Instant::now() >= deadline {
                if leading > 0 {
                    tracing::warn!(
                        partitions = leading,
                        "shutting down while still leading partitions"
                    );
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one coalesced heartbeat to `peer` listing `leads`; records its answer.
    pub(crate) async fn send_heartbeat(self: &Arc<Self>, peer: u64, leads: Vec<(GroupId, u64)>) {
        let hb = Heartbeat {
            from: self.node_id,
            leads,
        };
        let Ok(body) = wire::to_bytes(&hb) else {
            return;
        };
        let ttl = self
            .settings
            .heartbeat_interval
            .max(Duration::from_millis(200));
        match self
            .transport
            .call::<()>(peer, Kind::Heartbeat, &body, ttl)
            .await
        {
            Ok(()) => self.peer_answered(peer),
            Err(e) => tracing::trace!(peer, error = %e, "heartbeat not answered"),
        }
    }
}

impl Dispatch for Replication {
    fn handle(self: Arc<Self>, frame: Frame) -> BoxFuture<'static, Bytes> {
        Box::pin(self.handle_frame(frame))
    }
}
