//! The group coordinator service: owns every group hosted by this broker, persists commits and group
//! metadata to `__consumer_offsets` (see `store.rs` for the format and the commit point), rebuilds its
//! state from that topic at start, and runs the timer task that drives the state machines.
//!
//! Locking: one mutex over the group map, never held across an await. Writes for one
//! `__consumer_offsets` partition are serialised by a per-partition async lock held from the append
//! until the in-memory state is updated, so the in-memory order matches the log order.
//!
//! Offset commits are group-committed: a commit queues its records per `__consumer_offsets`
//! partition, and whoever holds that partition's write lock appends everything queued so far as one
//! batch (one fsync), applies it in queue order and answers each waiter. Without this every commit
//! waited for its own fsync under the lock, so pipelined commits (librdkafka's async commits) were
//! answered one fsync at a time and a ConsumerGroupHeartbeat queued behind them on the same connection
//! outlived the client's request timeout (the heartbeat interval).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::assignor::TopicPartitions;
use super::classic::{
    Group, GroupConfig, GroupState, JoinOutcome, JoinRequest, Reply, SyncOutcome,
};
use super::consumer::{
    ConsumerConfig, ConsumerGroup, ConsumerMember, HeartbeatOutcome, HeartbeatRequest,
};
use super::offsets::{self, CommittedOffset};
use super::store::{self, GroupRecord};
use crate::admin::TopicAdmin;
use crate::cluster::ClusterLink;
use crate::error::{BrokerError, GroupError};
use crate::replica::{Partition, ReplicaManager};

/// Name of the internal topic holding commits and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often deadlines (session, rebalance, initial delay) are checked.
const TICK: Duration = Duration::from_millis(50);
/// Kafka's `offset.metadata.max.bytes` default.
pub const MAX_METADATA_BYTES: usize = 4096;
/// How often offset retention runs.
const RETENTION_EVERY_MS: i64 = 60_000;

/// Source of the current time, injectable for tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::replica::now_ms()
    }
}

/// Committed offsets per topic: (topic, [(partition, offset if committed)]).
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// Per topic, per partition outcome of OffsetDelete.
pub type OffsetDeleteResults = Vec<(String, Vec<(i32, Result<(), BrokerError>)>)>;

/// Coordinator settings from the broker config.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    /// `offsets.topic.num.partitions` used when the topic is created.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor` (capped at the live brokers) used when it is created.
    pub offsets_topic_replication_factor: i16,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
    /// `offsets.retention.minutes` in ms.
    pub offsets_retention_ms: i64,
    /// KIP-848 heartbeat interval and session timeout.
    pub consumer: ConsumerConfig,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type (empty for offset-only groups).
    pub protocol_type: String,
    /// State name.
    pub state: &'static str,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
}

/// A KIP-848 group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    /// State name.
    pub state: &'static str,
    /// Group epoch.
    pub epoch: i32,
    /// Target assignment epoch.
    pub assignment_epoch: i32,
    /// Assignor in force.
    pub assignor: String,
    /// Members with their current and target assignments.
    pub members: Vec<(ConsumerMember, TopicPartitions)>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// group.instance.id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// State name (`Dead` for an unknown group, as Kafka answers).
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// Kafka's `String.hashCode` (UTF-16 code units, wrapping 32-bit arithmetic).
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group: `abs(hash) % n` with Kafka's `Utils.abs`.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Upper bound of the record bytes one group-committed batch gathers (well under the default
/// `max.message.bytes`).
const MAX_COMMIT_BATCH_BYTES: usize = 256 * 1024;

/// One OffsetCommit waiting for the write lock of its `__consumer_offsets` partition.
#[derive(Debug)]
struct QueuedCommit {
    group_id: String,
    records: Vec<(Bytes, Option<Bytes>)>,
    offsets: Vec<(String, i32, CommittedOffset)>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl QueuedCommit {
    fn bytes(&self) -> usize {
        self.records
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
            .sum()
    }
}

/// The group coordinator.
#[derive(Debug)]
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    cfg: CoordinatorConfig,
    clock: Arc<dyn Clock>,
    write_locks: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<()>>>>,
    commit_queues: Mutex<HashMap<i32, Vec<QueuedCommit>>>,
    /// Appends to `__consumer_offsets` so far (each waits for one fsync).
    appends: std::sync::atomic::AtomicU64,
    create_lock: tokio::sync::Mutex<()>,
    closing: std::sync::atomic::AtomicBool,
    /// The `__consumer_offsets` partitions whose groups are loaded, with the leader epoch they
    /// were loaded in: exactly the ones this broker leads (see [`GroupCoordinator::run_leadership`]).
    loaded: Mutex<BTreeMap<i32, i32>>,
    replicas: Arc<ReplicaManager>,
    cluster: Arc<ClusterLink>,
    admin: Arc<TopicAdmin>,
}

impl GroupCoordinator {
    /// A coordinator with no groups loaded yet: it loads the groups of each `__consumer_offsets`
    /// partition when this broker becomes its leader ([`GroupCoordinator::sync_leadership`]).
    pub fn new(
        cfg: CoordinatorConfig,
        clock: Arc<dyn Clock>,
        replicas: Arc<ReplicaManager>,
        cluster: Arc<ClusterLink>,
        admin: Arc<TopicAdmin>,
    ) -> Self {
        Self {
            loaded: Mutex::new(BTreeMap::new()),
            replicas,
            cluster,
            admin,
            groups: Mutex::new(HashMap::new()),
            cfg,
            clock,
            write_locks: Mutex::new(HashMap::new()),
            commit_queues: Mutex::new(HashMap::new()),
            appends: std::sync::atomic::AtomicU64::new(0),
            create_lock: tokio::sync::Mutex::new(()),
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn group_cfg(&self) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: self.cfg.initial_rebalance_delay_ms,
        }
    }

    /// Creates `__consumer_offsets` (through the metadata quorum, its partitions spread over the
    /// brokers) if it does not exist yet; returns its partition count.
    pub async fn ensure_topic(&self) -> Result<i32, BrokerError> {
        if let Some(n) = self.offsets_partitions() {
            return Ok(n);
        }
        let _guard = self.create_lock.lock().await;
        if let Some(n) = self.offsets_partitions() {
            return Ok(n);
        }
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let n = self.cfg.offsets_topic_num_partitions;
        let rf = self
            .admin
            .capped_replication_factor(self.cfg.offsets_topic_replication_factor);
        match self
            .admin
            .create_topic(OFFSETS_TOPIC, n, rf, configs, false)
            .await
        {
            Ok(_) | Err(BrokerError::TopicAlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        self.offsets_partitions()
            .ok_or_else(|| BrokerError::from(GroupError::CoordinatorNotAvailable))
    }

    /// The partition count of `__consumer_offsets`, if it exists.
    fn offsets_partitions(&self) -> Option<i32> {
        self.cluster
            .view()
            .topics
            .get(OFFSETS_TOPIC)
            .map(|t| t.partitions)
    }

    /// Whether this broker coordinates `group_id`, i.e. leads the group's `__consumer_offsets`
    /// partition: NOT_COORDINATOR if another broker does, COORDINATOR_NOT_AVAILABLE if none does.
    /// Before the topic exists (FindCoordinator creates it) every broker may take the group.
    pub fn owns(&self, group_id: &str) -> Result<(), GroupError> {
        if self.is_closing() {
            return Err(GroupError::NotCoordinator);
        }
        let view = self.cluster.view();
        let Some(topic) = view.topics.get(OFFSETS_TOPIC) else {
            return Ok(());
        };
        let index = partition_for(group_id, topic.partitions);
        if self.loaded.lock().contains_key(&index) {
            return Ok(());
        }
        let led_here = self
            .replicas
            .get_by_name(OFFSETS_TOPIC, index)
            .is_some_and(|p| p.is_raft_leader());
        let me = self.cluster.broker_id();
        match view.partition(OFFSETS_TOPIC, index) {
            _ if led_here => Err(GroupError::CoordinatorLoadInProgress),
            // The metadata still names this broker, but its replica is not (yet) the Raft leader.
            Some(p) if p.leader < 0 || p.leader == me => Err(GroupError::CoordinatorNotAvailable),
            _ => Err(GroupError::NotCoordinator),
        }
    }

    async fn append(
        &self,
        group_id: &str,
        records: &[(Bytes, Option<Bytes>)],
    ) -> Result<(), BrokerError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = self.ensure_topic().await?;
        let index = partition_for(group_id, n);
        let partition = self
            .replicas
            .get_by_name(OFFSETS_TOPIC, index)
            .filter(|p| p.is_leader())
            .ok_or_else(|| BrokerError::from(GroupError::NotCoordinator))?;
        let batch = store::build_batch(records, self.now())
            .map_err(|e| BrokerError::MetadataIo(e.to_string()))?;
        self.appends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        partition
            .produce(&batch, -1, partition.settings().min_insync_replicas)
            .await?;
        Ok(())
    }

    async fn write_lock(
        &self,
        group_id: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, BrokerError> {
        let n = self.ensure_topic().await?;
        let index = partition_for(group_id, n);
        let lock = self
            .write_locks
            .lock()
            .entry(index)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        Ok(lock.lock_owned().await)
    }

    /// Persists group metadata changes; failures are logged (group metadata is advisory: groups come
    /// back Empty after a restart and their members rejoin).
    async fn persist(&self, dirty: Vec<(String, Bytes, Option<Bytes>)>) {
        for (group, key, value) in dirty {
            let _guard = match self.write_lock(&group).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "cannot persist group metadata");
                    continue;
                }
            };
            if let Err(e) = self.append(&group, &[(key, value)]).await {
                tracing::warn!(group = %group, error = %e, "cannot persist group metadata");
            }
        }
    }

    fn take_dirty(g: &mut Group, out: &mut Vec<(String, Bytes, Option<Bytes>)>) {
        if g.take_dirty() {
            out.push((
                g.id.clone(),
                store::group_key(&g.id),
                Some(store::group_value(&g.stored())),
            ));
        }
    }

    /// Loads the groups of every `__consumer_offsets` partition this broker now leads and drops
    /// the groups of the ones it no longer leads. Blocking (reads the log). Called at start and by
    /// [`GroupCoordinator::run_leadership`] whenever leadership moves.
    pub fn sync_leadership(&self) -> Result<(), BrokerError> {
        let led: BTreeMap<i32, i32> = self.replicas.led(OFFSETS_TOPIC).into_iter().collect();
        let loaded = self.loaded.lock().clone();
        for (index, epoch) in &loaded {
            if led.get(index) != Some(epoch) {
                self.unload(*index);
            }
        }
        let mut first_error = None;
        for (index, epoch) in led {
            if loaded.get(&index) == Some(&epoch) {
                continue;
            }
            let Some(p) = self.replicas.get_by_name(OFFSETS_TOPIC, index) else {
                continue;
            };
            match self.load_partition(&p) {
                Ok(()) => {
                    self.loaded.lock().insert(index, epoch);
                }
                Err(e) => {
                    tracing::error!(partition = index, error = %e, "cannot load consumer groups");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Rebuilds the offsets and groups stored in one `__consumer_offsets` partition.
    fn load_partition(&self, p: &Partition) -> Result<(), BrokerError> {
        let now = self.now();
        let (start, end, _) = p.offsets();
        let mut offset = start;
        let mut records = 0usize;
        let mut loaded: HashMap<String, Group> = HashMap::new();
        while offset < end {
            let data = p.read(offset, 1 << 20, true)?;
            if data.is_empty() {
                break;
            }
            let before = offset;
            for item in tiering::BatchIter::new(&data) {
                let (header, range) =
                    item.map_err(|e| BrokerError::MetadataIo(format!("{}: {e}", p.label())))?;
                let next = header.last_offset() + 1;
                if next <= offset {
                    continue;
                }
                offset = next;
                let recs = store::decode_batches(data.slice(range))
                    .map_err(|e| BrokerError::MetadataIo(format!("{}: {e}", p.label())))?;
                records += recs.len();
                for r in recs {
                    apply(&mut loaded, r, now);
                }
            }
            if offset == before {
                break;
            }
        }
        let count = loaded.len();
        self.groups.lock().extend(loaded);
        tracing::info!(
            partition = %p.label(),
            groups = count,
            records,
            "loaded consumer groups"
        );
        Ok(())
    }

    /// Drops the groups of a `__consumer_offsets` partition this broker no longer leads; their
    /// parked JoinGroup/SyncGroup calls answer NOT_COORDINATOR, so members find the new one.
    fn unload(&self, index: i32) {
        let n = self.offsets_partitions().unwrap_or(1);
        let mut groups = self.groups.lock();
        self.loaded.lock().remove(&index);
        let gone: Vec<String> = groups
            .keys()
            .filter(|g| partition_for(g, n) == index)
            .cloned()
            .collect();
        for id in &gone {
            if let Some(mut g) = groups.remove(id) {
                g.abort_waiters(GroupError::NotCoordinator);
            }
        }
        tracing::info!(
            partition = index,
            groups = gone.len(),
            "unloaded consumer groups"
        );
    }

    /// Follows this broker's leadership of `__consumer_offsets` partitions until `cancel`.
    pub async fn run_leadership(self: Arc<Self>, cancel: CancellationToken) {
        let mut moved = self.replicas.subscribe_leadership();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = moved.changed() => if changed.is_err() { return },
            }
            moved.borrow_and_update();
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.sync_leadership()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "consumer groups only partly loaded"),
                Err(e) => tracing::error!(error = %e, "consumer group loading task failed"),
            }
        }
    }

    /// Runs deadlines and offset retention until `cancel` fires.
    pub async fn run_timers(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_retention = self.now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    // Shutdown: release JoinGroup/SyncGroup calls parked on a rebalance so that the
                    // connections can finish; clients find the coordinator again after the restart.
                    let mut groups = self.groups.lock();
                    self.closing.store(true, std::sync::atomic::Ordering::Release);
                    for g in groups.values_mut() {
                        g.abort_waiters(GroupError::NotCoordinator);
                    }
                    return;
                }
                _ = tokio::time::sleep(TICK) => {}
            }
            let now = self.now();
            let retention_due = now - last_retention >= RETENTION_EVERY_MS;
            if retention_due {
                last_retention = now;
            }
            self.tick(now, retention_due).await;
        }
    }

    /// One timer round at `now`: fires group deadlines, persists metadata changes and, with
    /// `retention_due`, tombstones the expired offsets of Empty groups.
    pub async fn tick(&self, now: i64, retention_due: bool) {
        let mut dirty = Vec::new();
        let mut expired: Vec<(String, Vec<(String, i32)>)> = Vec::new();
        {
            let mut groups = self.groups.lock();
            for g in groups.values_mut() {
                g.tick(now);
                if let Some(c) = g.consumer.as_mut() {
                    let topics = topic_counts(&self.cluster, &c.subscribed_topics(None));
                    for id in c.tick(&topics, now) {
                        tracing::info!(group = %g.id, member = %id, "consumer group member expired");
                    }
                }
                Self::take_dirty(g, &mut dirty);
                if retention_due && g.state == GroupState::Empty && !g.has_members() {
                    let keys: Vec<(String, i32)> = g
                        .offsets
                        .iter()
                        .filter(|(_, o)| {
                            offsets::expired(
                                o,
                                g.state_since_ms,
                                self.cfg.offsets_retention_ms,
                                now,
                            )
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !keys.is_empty() {
                        expired.push((g.id.clone(), keys));
                    }
                }
            }
        }
        self.persist(dirty).await;
        for (group, keys) in expired {
            tracing::info!(group = %group, offsets = keys.len(), "expiring committed offsets");
            if let Err(e) = self.delete_offsets_inner(&group, &keys).await {
                tracing::warn!(group = %group, error = %e, "cannot expire offsets");
            }
        }
    }

    /// JoinGroup.
    pub async fn join(
        &self,
        group_id: &str,
        req: JoinRequest,
    ) -> Result<JoinOutcome, (GroupError, String)> {
        if group_id.is_empty() {
            return Err((GroupError::InvalidGroupId, req.member_id));
        }
        let member_id = req.member_id.clone();
        let now = self.now();
        let cfg = self.group_cfg();
        let mut dirty = Vec::new();
        let reply = {
            let mut groups = self.groups.lock();
            // Checked under the map lock, which shutdown holds while it sets the flag and aborts
            // the parked calls, so no call can park after that.
            if self.is_closing() {
                return Err((GroupError::NotCoordinator, member_id));
            }
            let g = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            let r = g.join(req, now, &cfg);
            Self::take_dirty(g, &mut dirty);
            r
        };
        self.persist(dirty).await;
        match reply {
            Reply::Now(r) => r,
            Reply::Wait(rx) => rx
                .await
                .unwrap_or(Err((GroupError::RebalanceInProgress, member_id))),
        }
    }

    /// SyncGroup.
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncOutcome, GroupError> {
        let now = self.now();
        let mut dirty = Vec::new();
        let reply = {
            let mut groups = self.groups.lock();
            if self.is_closing() {
                return Err(GroupError::NotCoordinator);
            }
            let Some(g) = groups.get_mut(group_id) else {
                return Err(GroupError::UnknownMemberId);
            };
            let r = g.sync(member_id, instance_id, generation, assignments, now);
            Self::take_dirty(g, &mut dirty);
            r
        };
        self.persist(dirty).await;
        match reply {
            Reply::Now(r) => r,
            Reply::Wait(rx) => rx.await.unwrap_or(Err(GroupError::RebalanceInProgress)),
        }
    }

    /// Heartbeat.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        let now = self.now();
        let mut groups = self.groups.lock();
        let g = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        g.heartbeat(member_id, instance_id, generation, now)
    }

    /// LeaveGroup for each (member id, instance id).
    pub async fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let now = self.now();
        let mut dirty = Vec::new();
        let results = {
            let mut groups = self.groups.lock();
            let Some(g) = groups.get_mut(group_id) else {
                // As Kafka: no group means every leaving member is unknown.
                return Ok(vec![Err(GroupError::UnknownMemberId); members.len()]);
            };
            let r = members
                .iter()
                .map(|(m, i)| g.leave(m, i.as_deref(), now))
                .collect();
            Self::take_dirty(g, &mut dirty);
            r
        };
        self.persist(dirty).await;
        Ok(results)
    }

    /// OffsetCommit: validates membership, then appends every commit durably before applying it.
    /// Returns one result per entry.
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId.into());
        }
        {
            let groups = self.groups.lock();
            match groups.get(group_id) {
                Some(g) => g.validate_commit(member_id, instance_id, generation)?,
                None if generation < 0 => {}
                None => return Err(GroupError::IllegalGeneration.into()),
            }
        }
        let mut results = Vec::with_capacity(entries.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for (topic, partition, offset) in entries {
            if offset
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
            {
                results.push(Err(GroupError::OffsetMetadataTooLarge.into()));
                continue;
            }
            if self.cluster.view().partition(&topic, partition).is_none() {
                results.push(Err(BrokerError::UnknownTopicOrPartition(format!(
                    "{topic}-{partition}"
                ))));
                continue;
            }
            records.push((
                store::offset_key(group_id, &topic, partition),
                Some(store::offset_value(&offset)),
            ));
            accepted.push((results.len(), topic, partition, offset));
            results.push(Ok(()));
        }
        if records.is_empty() {
            let now = self.now();
            self.groups
                .lock()
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            return Ok(results);
        }
        let index = partition_for(group_id, self.ensure_topic().await?);
        let (done, written) = tokio::sync::oneshot::channel();
        self.commit_queues
            .lock()
            .entry(index)
            .or_default()
            .push(QueuedCommit {
                group_id: group_id.to_string(),
                records,
                offsets: accepted
                    .iter()
                    .map(|(_, t, p, o)| (t.clone(), *p, o.clone()))
                    .collect(),
                done,
            });
        {
            // Whoever holds the lock writes everything queued; ours may already be written.
            let _guard = self.write_lock(group_id).await?;
            loop {
                let batch = self.take_commits(index);
                if batch.is_empty() {
                    break;
                }
                self.write_commits(group_id, batch).await;
            }
        }
        // Always answered by now, unless the call that took it was cancelled mid-write.
        if let Err(e) = written
            .await
            .unwrap_or_else(|_| Err("write cancelled".into()))
        {
            tracing::warn!(group = group_id, error = %e, "cannot persist offset commit");
            for (i, ..) in &accepted {
                results[*i] = Err(GroupError::CoordinatorNotAvailable.into());
            }
        }
        Ok(results)
    }

    /// Takes the queued commits of one `__consumer_offsets` partition, up to
    /// [`MAX_COMMIT_BATCH_BYTES`] (at least one).
    fn take_commits(&self, index: i32) -> Vec<QueuedCommit> {
        let mut queues = self.commit_queues.lock();
        let Some(queue) = queues.get_mut(&index) else {
            return Vec::new();
        };
        let mut bytes = 0;
        let n = queue
            .iter()
            .take_while(|c| {
                let first = bytes == 0;
                bytes += c.bytes().max(1);
                first || bytes <= MAX_COMMIT_BATCH_BYTES
            })
            .count();
        let batch: Vec<QueuedCommit> = queue.drain(..n).collect();
        if queue.is_empty() {
            queues.remove(&index);
        }
        batch
    }

    /// Appends queued commits (all for one partition, write lock held) as one batch, then applies
    /// them in order and answers each.
    async fn write_commits(&self, group_id: &str, batch: Vec<QueuedCommit>) {
        let records: Vec<(Bytes, Option<Bytes>)> = batch
            .iter()
            .flat_map(|c| c.records.iter().cloned())
            .collect();
        let result = self
            .append(group_id, &records)
            .await
            .map_err(|e| e.to_string());
        if result.is_ok() {
            let now = self.now();
            let mut groups = self.groups.lock();
            for c in &batch {
                let g = groups
                    .entry(c.group_id.clone())
                    .or_insert_with(|| Group::new(&c.group_id, now));
                for (topic, partition, offset) in &c.offsets {
                    g.offsets
                        .insert((topic.clone(), *partition), offset.clone());
                }
            }
        }
        for c in batch {
            let _ = c.done.send(result.clone());
        }
    }

    /// OffsetFetch: committed offsets of `topics` (all topics with `None`).
    pub fn fetch(&self, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> FetchedOffsets {
        let groups = self.groups.lock();
        let g = groups.get(group_id);
        match topics {
            Some(ts) => ts
                .into_iter()
                .map(|(t, parts)| {
                    let ps = parts
                        .into_iter()
                        .map(|p| (p, g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned())))
                        .collect();
                    (t, ps)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                    BTreeMap::new();
                if let Some(g) = g {
                    for ((t, p), o) in &g.offsets {
                        by_topic
                            .entry(t.clone())
                            .or_default()
                            .push((*p, Some(o.clone())));
                    }
                }
                by_topic.into_iter().collect()
            }
        }
    }

    /// ListGroups, optionally filtered by state names (case-insensitive).
    pub fn list(&self, states: &[String]) -> Vec<GroupListing> {
        let groups = self.groups.lock();
        let mut out: Vec<GroupListing> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state_name()))
            })
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: if g.consumer.is_some() {
                    "consumer".to_string()
                } else {
                    g.protocol_type.clone().unwrap_or_default()
                },
                state: g.state_name(),
                group_type: if g.consumer.is_some() {
                    "consumer"
                } else {
                    "classic"
                },
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// DescribeGroups for one group.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
            return GroupDescription {
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        if let Some(c) = &g.consumer {
            // Kafka answers DescribeGroups for a consumer group with its state and no classic
            // members.
            return GroupDescription {
                state: c.state_name(),
                protocol_type: "consumer".into(),
                protocol: String::new(),
                members: Vec::new(),
            };
        }
        let protocol = g.protocol.clone().unwrap_or_default();
        GroupDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// ConsumerGroupHeartbeat (KIP-848). The group is created (or an empty classic group converted)
    /// by a join; a classic group with members answers GROUP_ID_NOT_FOUND, as Kafka does.
    pub async fn consumer_heartbeat(
        &self,
        group_id: &str,
        req: HeartbeatRequest,
    ) -> Result<HeartbeatOutcome, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if self.is_closing() {
            return Err(GroupError::NotCoordinator);
        }
        if self.ensure_topic().await.is_err() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let now = self.now();
        let mut dirty = Vec::new();
        let result = {
            let mut groups = self.groups.lock();
            let joining = req.member_epoch == 0;
            let g = match groups.get_mut(group_id) {
                Some(g) => g,
                None if joining => groups
                    .entry(group_id.to_string())
                    .or_insert_with(|| Group::new(group_id, now)),
                None => return Err(GroupError::UnknownMemberId),
            };
            if g.state == GroupState::Dead {
                return Err(GroupError::CoordinatorNotAvailable);
            }
            if g.consumer.is_none() {
                if !g.members.is_empty() || g.state != GroupState::Empty {
                    return Err(GroupError::GroupIdNotFound);
                }
                if !joining {
                    return Err(GroupError::UnknownMemberId);
                }
                g.consumer = Some(ConsumerGroup::new(g.generation.max(0)));
                g.protocol = None;
                g.leader = None;
                g.protocol_type = Some("consumer".into());
            }
            let c = g.consumer.as_mut().expect("set above");
            let topics = topic_counts(&self.cluster, &c.subscribed_topics(req.subscribed.as_ref()));
            let r = c.heartbeat(req, &topics, &self.cfg.consumer, now);
            Self::take_dirty(g, &mut dirty);
            r
        };
        self.persist(dirty).await;
        result
    }

    /// ConsumerGroupDescribe for one group: GROUP_ID_NOT_FOUND unless it is a consumer group.
    pub fn consumer_describe(
        &self,
        group_id: &str,
    ) -> Result<ConsumerGroupDescription, GroupError> {
        let groups = self.groups.lock();
        let c = groups
            .get(group_id)
            .filter(|g| g.state != GroupState::Dead)
            .and_then(|g| g.consumer.as_ref())
            .ok_or(GroupError::GroupIdNotFound)?;
        Ok(ConsumerGroupDescription {
            state: c.state_name(),
            epoch: c.epoch,
            assignment_epoch: c.assignment_epoch,
            assignor: c.assignor(),
            members: c
                .members
                .values()
                .map(|m| (m.clone(), c.target.get(&m.id).cloned().unwrap_or_default()))
                .collect(),
        })
    }

    /// OffsetFetch v9 member check: a consumer group validates the member id and epoch.
    pub fn validate_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        epoch: i32,
    ) -> Result<(), GroupError> {
        let Some(member_id) = member_id else {
            return Ok(());
        };
        if epoch < 0 && member_id.is_empty() {
            return Ok(());
        }
        let groups = self.groups.lock();
        match groups.get(group_id).and_then(|g| g.consumer.as_ref()) {
            Some(c) => c.validate_member(member_id, epoch),
            None => Ok(()),
        }
    }

    /// DeleteGroups for one group: only groups without members; tombstones every offset and the group.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), BrokerError> {
        let keys: Vec<(String, i32)> = {
            let groups = self.groups.lock();
            let g = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
            if g.has_members() || g.state != GroupState::Empty {
                return Err(GroupError::NonEmptyGroup.into());
            }
            g.offsets.keys().cloned().collect()
        };
        let _guard = self.write_lock(group_id).await?;
        let mut records: Vec<(Bytes, Option<Bytes>)> = keys
            .iter()
            .map(|(t, p)| (store::offset_key(group_id, t, *p), None))
            .collect();
        records.push((store::group_key(group_id), None));
        self.append(group_id, &records).await?;
        let now = self.now();
        let mut groups = self.groups.lock();
        if let Some(mut g) = groups.remove(group_id) {
            g.kill(now);
        }
        Ok(())
    }

    /// OffsetDelete: deletes the offsets of `topics` unless a member is subscribed to the topic.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
    ) -> Result<OffsetDeleteResults, BrokerError> {
        let mut out = Vec::new();
        let mut keys = Vec::new();
        {
            let groups = self.groups.lock();
            let g = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
            for (topic, parts) in topics {
                let subscribed =
                    (g.state != GroupState::Empty || g.has_members()) && g.subscribed_to(&topic);
                let mut results = Vec::new();
                for p in parts {
                    if subscribed {
                        results.push((p, Err(GroupError::GroupSubscribedToTopic.into())));
                    } else {
                        keys.push((topic.clone(), p));
                        results.push((p, Ok(())));
                    }
                }
                out.push((topic, results));
            }
        }
        self.delete_offsets_inner(group_id, &keys).await?;
        Ok(out)
    }

    async fn delete_offsets_inner(
        &self,
        group_id: &str,
        keys: &[(String, i32)],
    ) -> Result<(), BrokerError> {
        let present: Vec<(String, i32)> = {
            let groups = self.groups.lock();
            let Some(g) = groups.get(group_id) else {
                return Ok(());
            };
            keys.iter()
                .filter(|k| g.offsets.contains_key(*k))
                .cloned()
                .collect()
        };
        if present.is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock(group_id).await?;
        let records: Vec<(Bytes, Option<Bytes>)> = present
            .iter()
            .map(|(t, p)| (store::offset_key(group_id, t, *p), None))
            .collect();
        self.append(group_id, &records).await?;
        let mut groups = self.groups.lock();
        if let Some(g) = groups.get_mut(group_id) {
            for k in &present {
                g.offsets.remove(k);
            }
        }
        Ok(())
    }

    /// (group, topic, partition, lag) for every committed offset of a partition hosted here: log
    /// end offset minus committed.
    pub fn lag(&self) -> Vec<(String, String, i32, i64)> {
        let entries: Vec<(String, String, i32, i64)> = {
            let groups = self.groups.lock();
            groups
                .values()
                .flat_map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), o)| (g.id.clone(), t.clone(), *p, o.offset))
                })
                .collect()
        };
        entries
            .into_iter()
            .filter_map(|(g, t, p, committed)| {
                let end = self.replicas.get_by_name(&t, p)?.high_watermark();
                Some((g, t, p, (end - committed).max(0)))
            })
            .collect()
    }
}

/// Partition counts of the existing topics among `names`.
fn topic_counts(
    cluster: &ClusterLink,
    names: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, i32> {
    let view = cluster.view();
    names
        .iter()
        .filter_map(|t| view.topics.get(t).map(|r| (t.clone(), r.partitions)))
        .collect()
}

fn apply(groups: &mut HashMap<String, Group>, r: GroupRecord, now: i64) {
    match r {
        GroupRecord::Offset {
            group,
            topic,
            partition,
            value,
        } => {
            let g = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(group, now));
            match value {
                Some(o) => {
                    g.offsets.insert((topic, partition), o);
                }
                None => {
                    g.offsets.remove(&(topic, partition));
                }
            }
        }
        GroupRecord::Group { group, value } => match value {
            Some(stored) => groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(group, now))
                .restore(&stored, now),
            None => {
                groups.remove(&group);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicI64, Ordering};

    use crate::config::BrokerConfig;

    #[derive(Debug, Default)]
    struct FakeClock(AtomicI64);

    impl Clock for FakeClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A broker in a temp dir with a topic `t`, and a coordinator config over an injected clock.
    struct Fixture {
        _dir: tempfile::TempDir,
        broker: Arc<crate::services::Services>,
        clock: Arc<FakeClock>,
        ccfg: CoordinatorConfig,
    }

    async fn fixture(offsets_partitions: i32, topic_partitions: i32) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            metrics_listen: "off".into(),
            offsets_topic_num_partitions: offsets_partitions,
            ..Default::default()
        };
        let broker = crate::services::Services::open(cfg.validate().expect("config"))
            .await
            .expect("broker");
        broker
            .admin
            .create_topic("t", topic_partitions, 1, BTreeMap::new(), false)
            .await
            .expect("topic");
        Fixture {
            _dir: dir,
            broker,
            clock: Arc::new(FakeClock(AtomicI64::new(1_000))),
            ccfg: CoordinatorConfig {
                offsets_topic_num_partitions: offsets_partitions,
                offsets_topic_replication_factor: 1,
                initial_rebalance_delay_ms: 0,
                offsets_retention_ms: 60_000,
                consumer: ConsumerConfig::default(),
            },
        }
    }

    fn new_coordinator(
        broker: &crate::services::Services,
        ccfg: CoordinatorConfig,
        clock: Arc<FakeClock>,
    ) -> GroupCoordinator {
        GroupCoordinator::new(
            ccfg,
            clock,
            broker.replicas.clone(),
            broker.cluster.clone(),
            broker.admin.clone(),
        )
    }

    fn offset(o: i64, ts: i64) -> CommittedOffset {
        CommittedOffset {
            offset: o,
            leader_epoch: 2,
            metadata: Some("m".into()),
            commit_timestamp_ms: ts,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_persist_replay_and_expire_with_an_injected_clock() {
        let Fixture {
            _dir,
            broker,
            clock,
            ccfg,
        } = fixture(4, 2).await;
        let coord = new_coordinator(&broker, ccfg, clock.clone());
        for (group, o) in [("a", 5), ("b", 7)] {
            let r = coord
                .commit(group, "", None, -1, vec![("t".into(), 0, offset(o, 1_000))])
                .await
                .expect("commit");
            assert!(r[0].is_ok());
        }
        let r = coord
            .commit(
                "a",
                "",
                None,
                -1,
                vec![("nope".into(), 0, offset(1, 1_000))],
            )
            .await
            .expect("commit");
        assert_eq!(r[0].as_ref().map_err(|e| e.code()), Err(3));
        assert_eq!(broker.topic(OFFSETS_TOPIC).map(|t| t.partitions), Some(4));

        // A second coordinator replays what the first one wrote.
        let replayed = new_coordinator(&broker, ccfg, clock.clone());
        replayed.sync_leadership().expect("load");
        let got = replayed.fetch("a", Some(vec![("t".into(), vec![0, 1])]));
        assert_eq!(got[0].1[0].1, Some(offset(5, 1_000)));
        assert_eq!(got[0].1[1].1, None);

        // Group "b" commits again later; after the retention only "a"'s offset is expired.
        clock.0.store(30_000, Ordering::SeqCst);
        coord
            .commit("b", "", None, -1, vec![("t".into(), 0, offset(8, 30_000))])
            .await
            .expect("commit");
        clock.0.store(61_000, Ordering::SeqCst);
        coord.tick(61_000, true).await;
        assert!(coord.fetch("a", None).is_empty(), "a's offset expired");
        assert_eq!(coord.fetch("b", None)[0].1[0].1, Some(offset(8, 30_000)));

        let replayed = new_coordinator(&broker, ccfg, clock.clone());
        replayed.sync_leadership().expect("load");
        assert!(
            replayed.fetch("a", None).is_empty(),
            "the tombstone is replayed"
        );
        assert_eq!(
            replayed.fetch("b", None)[0].1[0]
                .1
                .as_ref()
                .map(|o| o.offset),
            Some(8)
        );
        assert_eq!(replayed.list(&[]).len(), 2);
        broker.shutdown().await;
    }

    /// Pipelined commits of one group must not each wait for their own fsync under the write lock:
    /// they are appended together (librdkafka's async commits otherwise delay a
    /// ConsumerGroupHeartbeat behind them on the same connection past its 1 s request timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_are_group_committed_in_order() {
        let Fixture {
            _dir,
            broker,
            clock,
            ccfg,
        } = fixture(1, 1).await;
        let coord = new_coordinator(&broker, ccfg, clock.clone());
        // The offsets topic exists before the burst, as it does for any group that found its
        // coordinator: its creation (a metadata write) is not what this test measures.
        coord.ensure_topic().await.expect("offsets topic");
        const N: i64 = 64;
        let commits = (1..=N)
            .map(|o| coord.commit("g", "", None, -1, vec![("t".into(), 0, offset(o, 1_000))]));
        for r in futures::future::join_all(commits).await {
            assert!(r.expect("commit")[0].is_ok());
        }
        assert_eq!(coord.fetch("g", None)[0].1[0].1, Some(offset(N, 1_000)));

        let appends = coord.appends.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            appends <= 4,
            "{N} concurrent commits took {appends} appends (one fsync each)"
        );
        // The log order matches the in-memory order: a replay ends at the last commit.
        let replayed = new_coordinator(&broker, ccfg, clock);
        replayed.sync_leadership().expect("load");
        assert_eq!(replayed.fetch("g", None)[0].1[0].1, Some(offset(N, 1_000)));
        broker.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_groups_exclude_classic_members_validate_epochs_and_persist() {
        use crate::group::consumer::HeartbeatRequest;
        let Fixture {
            _dir,
            broker,
            clock,
            ccfg,
        } = fixture(2, 2).await;
        let coord = new_coordinator(&broker, ccfg, clock.clone());
        let hb = HeartbeatRequest {
            member_id: "m1".into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed: Some(["t".to_string()].into()),
            owned: Some(TopicPartitions::new()),
            ..Default::default()
        };
        let out = coord
            .consumer_heartbeat("g", hb.clone())
            .await
            .expect("join");
        assert_eq!(out.member_epoch, 1);
        assert_eq!(out.assignment.expect("assignment")["t"].len(), 2);

        // A classic JoinGroup to the consumer group is refused.
        let join = JoinRequest {
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
            require_known_member_id: false,
        };
        let refused = coord.join("g", join.clone()).await;
        assert_eq!(
            refused.err().map(|e| e.0),
            Some(GroupError::InconsistentGroupProtocol)
        );

        // OffsetCommit v9 carries the member epoch.
        let o = || vec![("t".to_string(), 0, offset(3, 1_000))];
        let stale = coord.commit("g", "m1", None, 7, o()).await;
        assert_eq!(stale.err().map(|e| e.code()), Some(113));
        let ok = coord.commit("g", "m1", None, 1, o()).await.expect("commit");
        assert!(ok[0].is_ok());
        assert_eq!(
            coord.validate_fetch("g", Some("m1"), 0),
            Err(GroupError::StaleMemberEpoch)
        );
        assert_eq!(coord.list(&[])[0].group_type, "consumer");
        assert_eq!(
            coord.consumer_describe("g").expect("describe").state,
            "Stable"
        );

        // Replay: the group comes back as an empty consumer group with its epoch and offsets.
        let replayed = new_coordinator(&broker, ccfg, clock.clone());
        replayed.sync_leadership().expect("load");
        let d = replayed.consumer_describe("g").expect("consumer group");
        assert_eq!((d.state, d.epoch), ("Empty", 1));
        assert_eq!(replayed.fetch("g", None)[0].1[0].1, Some(offset(3, 1_000)));

        // The member leaves; the empty group switches to classic on a JoinGroup.
        let leave = HeartbeatRequest {
            member_epoch: -1,
            ..hb
        };
        coord.consumer_heartbeat("g", leave).await.expect("leave");
        let joined = coord.join("g", join).await.expect("classic join");
        assert!(!joined.member_id.is_empty());
        assert!(coord.consumer_describe("g").is_err());
        assert_eq!(coord.list(&[])[0].group_type, "classic");
        broker.shutdown().await;
    }

    #[test]
    fn group_partition_matches_kafka() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE; Utils.abs maps it to 0.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(java_string_hash("Aa"), java_string_hash("BB"));
    }

    #[test]
    fn replay_applies_commits_tombstones_and_group_deletes() {
        let mut groups = HashMap::new();
        let o = |offset| CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        };
        let off = |g: &str, t: &str, p, v| GroupRecord::Offset {
            group: g.into(),
            topic: t.into(),
            partition: p,
            value: v,
        };
        apply(&mut groups, off("g", "t", 0, Some(o(5))), 0);
        apply(&mut groups, off("g", "t", 0, Some(o(9))), 0);
        apply(&mut groups, off("g", "t", 1, Some(o(1))), 0);
        apply(&mut groups, off("g", "t", 1, None), 0);
        apply(&mut groups, off("h", "t", 0, Some(o(1))), 0);
        apply(
            &mut groups,
            GroupRecord::Group {
                group: "h".into(),
                value: None,
            },
            0,
        );
        assert_eq!(groups.len(), 1);
        let g = &groups["g"];
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.offsets.len(), 1);
        assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 9);
    }
}
