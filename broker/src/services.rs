//! The services a running broker is made of, wired together at start: the metadata link (view and
//! writes), the replica manager, the admin service, the group coordinator and the remote tier. Each
//! service holds only the narrow handles it needs; [`Services`] is the bundle the request handlers
//! (the top layer) are given, and nothing below the handlers ever sees it.
//!
//! Start-up order ([`Services::join`]): register with the metadata quorum; initialize the cluster
//! if it is new (importing a single-node `metadata.json` or the object store's metadata copy);
//! load the remote manifests of the tiered partitions this broker hosts; open every assigned
//! replica; publish the view; load consumer groups; start the background tasks (reconciler,
//! heartbeats, retention, disk usage, offload, group timers).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tiering::remote::RemotePartition;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::admin::TopicAdmin;
use crate::cluster::{ClusterLink, ClusterView, TopicView};
use crate::config::{BrokerConfig, RuntimeConfig};
use crate::disk_guard::DiskGuard;
use crate::error::BrokerError;
use crate::group::consumer::ConsumerConfig;
use crate::group::{CoordinatorConfig, GroupCoordinator, SystemClock};
use crate::metadata_store::MetadataStore;
use crate::metrics::{Metrics, PartitionSample, RemoteSample, Scrape};
use crate::offload::RemoteTier;
use crate::replica::{Partition, ReplicaManager};
use crate::replication::driver::LeaderReport;
use crate::replication::{Replication, ReplicationSettings};
use controller::state::{Command, LeadershipReport};

/// What the request handlers are given.
pub struct Services {
    /// Validated configuration.
    pub config: RuntimeConfig,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The metadata quorum: writes, and the metadata view handlers read.
    pub cluster: Arc<ClusterLink>,
    /// Hosted partition replicas.
    pub replicas: Arc<ReplicaManager>,
    /// Topic and config administration.
    pub admin: Arc<TopicAdmin>,
    /// The group coordinator (consumer groups and committed offsets).
    pub groups: Arc<GroupCoordinator>,
    /// The remote tier, when tiered storage is on.
    pub remote: Option<Arc<RemoteTier>>,
    /// The partition replication runtime.
    pub replication: Arc<Replication>,
    /// Stops the replication listener.
    replication_stop: CancellationToken,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("node_id", &self.node_id())
            .finish()
    }
}

impl Services {
    /// Starts a broker without tiered storage: its embedded controller, registration, and every
    /// replica it hosts (tests; the binary goes through `Server::start`).
    pub async fn open(config: RuntimeConfig) -> Result<Arc<Self>, BrokerError> {
        let cluster = ClusterLink::start(&config).await?;
        Self::join(config, cluster, None, &CancellationToken::new()).await
    }

    /// Registers with the metadata quorum, initializes the cluster if it is new, prepares the remote
    /// tier of the partitions this broker hosts, opens them and starts the background tasks.
    pub async fn join(
        config: RuntimeConfig,
        cluster: Arc<ClusterLink>,
        remote: Option<Arc<RemoteTier>>,
        cancel: &CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        // The replication endpoint is part of the registration: bind it first.
        let replication = Replication::new(
            u64::try_from(config.broker.node_id).unwrap_or_default(),
            replication_settings(&config.broker),
        )?;
        replication.set_overrides(config.replication_peer_overrides.clone());
        let listener = tokio::net::TcpListener::bind(config.replication_listen)
            .await
            .map_err(|e| {
                BrokerError::InvalidConfig(format!(
                    "cannot listen for replication on {}: {e}",
                    config.replication_listen
                ))
            })?;
        let bound = listener
            .local_addr()
            .map_err(|e| BrokerError::InvalidConfig(format!("replication listener: {e}")))?;
        let replication_stop = CancellationToken::new();
        replication.serve(listener, replication_stop.clone());
        cluster.set_replication_endpoint(config.advertised_host.clone(), bound.port());
        let index = cluster.register(cancel).await?;
        cluster.wait_applied(index).await?;
        let data_dir = config.broker.data_dir.clone();
        if cluster.read_state(|st| st.cluster_id.is_none()) {
            let legacy = if MetadataStore::exists(&data_dir) {
                Some(MetadataStore::open(&data_dir, None)?.state().clone())
            } else if let Some(tier) = &remote {
                tier.metadata_copy().await?
            } else {
                None
            };
            let import = legacy
                .as_ref()
                .map(|l| crate::cluster::import_from_legacy(l, cluster.broker_id()));
            let cluster_id = legacy
                .as_ref()
                .map(|l| l.cluster_id.clone())
                .or_else(|| config.broker.cluster_id.clone())
                .unwrap_or_else(crate::metadata_store::new_cluster_id);
            let (id, newly, index) = cluster.init_cluster(cluster_id, import).await?;
            cluster.wait_applied(index).await?;
            if newly {
                tracing::info!(cluster_id = %id, imported = legacy.is_some(), "initialized the cluster");
                if MetadataStore::exists(&data_dir) {
                    MetadataStore::retire(&data_dir)?;
                }
            } else if legacy.is_some() {
                tracing::warn!(cluster_id = %id, "another broker initialized the cluster first; the metadata found here was not imported");
            }
        }
        let view = cluster.read_state(|st| ClusterView::from_state(st, index));
        let loaded = match &remote {
            Some(tier) => {
                tier.prepare(&config.broker, &view, cluster.broker_id())
                    .await?
            }
            None => HashMap::new(),
        };
        let services = tokio::task::spawn_blocking(move || {
            Self::start(
                config,
                cluster,
                remote,
                loaded,
                replication,
                replication_stop,
            )
        })
        .await
        .map_err(|e| BrokerError::MetadataIo(format!("storage startup task failed: {e}")))??;
        services.start_tasks();
        services
            .wait_for_reported_sole_leaderships(
                services.replication.settings().election_timeout * 2,
            )
            .await;
        Ok(services)
    }

    /// Waits (up to `patience`) until the metadata names this broker leader of every partition
    /// only it replicates, so clients connecting right after start-up find their leaders.
    async fn wait_for_reported_sole_leaderships(&self, patience: Duration) {
        let me = self.node_id();
        let mut published = self.cluster.subscribe_reconciled();
        let all_reported = || {
            let view = self.cluster.view();
            !view
                .topics
                .values()
                .flat_map(|t| t.states.iter())
                .any(|s| s.replicas == [me] && s.leader != me)
        };
        // The view only changes when a new one is published, so wait for that, not a timer.
        let waited = tokio::time::timeout(patience, async {
            while !all_reported() {
                if published.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::debug!("start-up: not every sole-replica leadership reported in time");
        }
    }

    /// Opens the assigned replicas and loads the consumer groups (blocking).
    fn start(
        config: RuntimeConfig,
        cluster: Arc<ClusterLink>,
        remote: Option<Arc<RemoteTier>>,
        loaded_remote: HashMap<(Uuid, i32), Arc<RemotePartition>>,
        replication: Arc<Replication>,
        replication_stop: CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        let cfg = Arc::new(config.broker.clone());
        let index = cluster.applied_index();
        let view = cluster.read_state(|st| ClusterView::from_state(st, index));
        let disk = Arc::new(DiskGuard::new(
            &cfg.data_dir,
            cfg.local_disk_limit_bytes,
            cfg.local_disk_min_free_bytes,
        ));
        replication.set_cluster(view.replication_endpoints(), view.fenced_brokers());
        let replicas = Arc::new(ReplicaManager::new(
            &cfg.data_dir,
            replication.clone(),
            remote.as_ref().map(|t| t.ctx.clone()),
            loaded_remote,
            disk,
        ));
        let known: HashMap<String, Uuid> = view
            .topics
            .values()
            .map(|t| (t.name.clone(), t.id))
            .collect();
        replicas.clean_orphans(&known)?;
        let admin = Arc::new(TopicAdmin::new(cfg.clone(), cluster.clone()));
        let groups = Arc::new(GroupCoordinator::new(
            coordinator_config(&cfg),
            Arc::new(SystemClock),
            replicas.clone(),
            cluster.clone(),
            admin.clone(),
        ));
        crate::cluster::reconcile(&replicas, &cfg, None, &view)?;
        cluster.publish(view);
        // Partitions only this broker replicates elect it at once: wait for them (bounded), so the
        // groups of the `__consumer_offsets` partitions it leads are loaded before the listener
        // opens. Later leadership changes load and unload them as they happen.
        wait_for_sole_leaderships(&replicas, replication.settings().election_timeout * 2);
        groups.sync_leadership()?;
        Ok(Arc::new(Self {
            metrics: Metrics::new(),
            cluster,
            replicas,
            admin,
            groups,
            remote,
            replication,
            replication_stop,
            config,
        }))
    }

    /// Starts the background tasks; they stop at [`Services::shutdown`].
    fn start_tasks(&self) {
        let cfg = Arc::new(self.config.broker.clone());
        {
            let (link, replicas, cfg) = (self.cluster.clone(), self.replicas.clone(), cfg.clone());
            self.replicas.spawn_task(move |cancel| {
                crate::cluster::run_reconciler(link, replicas, cfg, cancel)
            });
        }
        let link = self.cluster.clone();
        self.replicas
            .spawn_task(move |cancel| link.run_heartbeats(cancel));
        let groups = self.groups.clone();
        self.replicas
            .spawn_task(move |cancel| groups.run_leadership(cancel));
        let (reports_tx, reports_rx) = tokio::sync::mpsc::unbounded_channel();
        let rt = self.replication.clone();
        self.replicas
            .spawn_task(move |cancel| crate::replication::driver::run(rt, reports_tx, cancel));
        let (link, groups) = (self.cluster.clone(), self.groups.clone());
        self.replicas
            .spawn_task(move |cancel| report_leadership(link, groups, reports_rx, cancel));
        let (link, rt) = (self.cluster.clone(), self.replication.clone());
        self.replicas
            .spawn_task(move |cancel| crate::cluster::reassign::run(link, rt, cancel));
        if cfg.auto_leader_rebalance_enable {
            let (link, rt) = (self.cluster.clone(), self.replication.clone());
            let interval = Duration::from_secs(cfg.leader_imbalance_check_interval_seconds);
            let percentage = cfg.leader_imbalance_per_broker_percentage;
            self.replicas.spawn_task(move |cancel| {
                crate::cluster::balance::run(link, rt, interval, percentage, cancel)
            });
        }
        self.replicas
            .spawn_retention(Duration::from_millis(cfg.log_retention_check_interval_ms));
        self.replicas.refresh_disk_usage();
        self.replicas.spawn_disk_refresh(Duration::from_secs(1));
        if let Some(tier) = self.remote.clone() {
            let (replicas, cluster, admin) = (
                self.replicas.clone(),
                self.cluster.clone(),
                self.admin.clone(),
            );
            self.replicas
                .spawn_task(move |cancel| tier.run(replicas, cluster, admin, cancel));
        }
    }

    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.config.broker.node_id
    }

    /// The current metadata view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.cluster.view()
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> String {
        self.view().cluster_id.clone()
    }

    /// This broker's config layers under the current dynamic configs (DescribeConfigs).
    pub fn layers(&self) -> crate::topic_config::BrokerLayers {
        self.view().layers(&self.config.broker, self.node_id())
    }

    /// One topic by name.
    pub fn topic(&self, name: &str) -> Option<TopicView> {
        self.view().topics.get(name).cloned()
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicView> {
        self.view().topic_by_id(id).cloned()
    }

    /// A replica this broker leads: UNKNOWN_TOPIC_OR_PARTITION if the cluster has no such
    /// partition, NOT_LEADER_OR_FOLLOWER if another broker (or none) leads it.
    pub fn leader_partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        let label = || format!("{topic}-{index}");
        if self.view().partition(topic, index).is_none() {
            return Err(BrokerError::UnknownTopicOrPartition(label()));
        }
        match self.replicas.get_by_name(topic, index) {
            Some(p) if p.is_leader() => Ok(p),
            Some(p) => {
                p.explain_not_leader();
                Err(BrokerError::NotLeader(label()))
            }
            None => Err(BrokerError::NotLeader(label())),
        }
    }

    /// The local replica a fetch reads: the leader's, or with `follower_ok` (a consumer's fetch,
    /// KIP-392) a live follower's, which serves up to its own high watermark.
    pub fn fetch_partition(
        &self,
        topic: &str,
        index: i32,
        follower_ok: bool,
    ) -> Result<Arc<Partition>, BrokerError> {
        match self.leader_partition(topic, index) {
            Err(BrokerError::NotLeader(label)) if follower_ok => {
                match self.replicas.get_by_name(topic, index) {
                    Some(p) if p.is_live_follower() => Ok(p),
                    _ => Err(BrokerError::NotLeader(label)),
                }
            }
            other => other,
        }
    }

    /// KIP-392's rack-aware replica selector: for a consumer in rack `client_rack` fetching from
    /// this leader, a live in-sync replica in that rack (none when this broker is in it, the
    /// selector is the leader selector, or no replica is there).
    pub fn preferred_read_replica(
        &self,
        topic: &str,
        index: i32,
        client_rack: &str,
    ) -> Option<i32> {
        if client_rack.is_empty() || self.config.broker.rack_aware_selector() != Some(true) {
            return None;
        }
        if self.config.broker.rack.as_deref() == Some(client_rack) {
            return None;
        }
        let view = self.view();
        let me = self.node_id();
        let st = view.partition(topic, index)?;
        st.isr.iter().copied().find(|b| {
            *b != me
                && view.is_live(*b)
                && view
                    .brokers
                    .get(b)
                    .is_some_and(|r| r.rack.as_deref() == Some(client_rack))
        })
    }

    /// Figures for one scrape of the metrics endpoint.
    pub fn scrape(&self) -> Scrape {
        let status = self.cluster.quorum_status();
        let view = self.view();
        let cluster = [
            i64::from(status.is_leader()),
            status
                .current_leader
                .and_then(|l| i64::try_from(l).ok())
                .unwrap_or(-1),
            status
                .last_applied
                .and_then(|i| i64::try_from(i).ok())
                .unwrap_or(0),
            i64::try_from(self.cluster.reconciled_index()).unwrap_or(i64::MAX),
            self.cluster.broker_epoch(),
            i64::try_from(view.live_brokers().count()).unwrap_or(i64::MAX),
        ];
        let partitions = self
            .replicas
            .all()
            .iter()
            .map(|p| {
                let (log_start, high_watermark, size_bytes) = p.offsets();
                let remote = match (p.remote(), p.upload_lag()) {
                    (Some(r), Some((lag_bytes, lag_segments))) => Some(RemoteSample {
                        lag_bytes,
                        lag_segments,
                        size_bytes: r.size_bytes(),
                        readable_start: r.readable_start().unwrap_or(-1),
                    }),
                    _ => None,
                };
                PartitionSample {
                    topic: p.topic.clone(),
                    partition: p.index,
                    log_start,
                    high_watermark,
                    size_bytes,
                    remote,
                }
            })
            .collect();
        Scrape {
            partitions,
            remote_totals: self.remote.as_ref().map(|t| t.totals()),
            group_lag: self.groups.lag(),
            cluster,
            replication: self.replication_sample(&view),
        }
    }

    /// The replication figures for one scrape.
    fn replication_sample(&self, view: &ClusterView) -> crate::metrics::ReplicationSample {
        let mut out = crate::metrics::ReplicationSample {
            elections_won: self.replication.leaderships_won(),
            ..Default::default()
        };
        for t in view.topics.values() {
            for st in &t.states {
                if !view.is_live(st.leader) {
                    out.offline += 1;
                }
                if st.reassignment.is_some() {
                    out.reassigning += 1;
                }
            }
        }
        for p in self.replicas.all() {
            if !p.is_leader() {
                continue;
            }
            out.leaders += 1;
            let group = p.group();
            let isr = group.isr();
            let moving = view
                .topic_by_id(p.topic_id)
                .and_then(|t| usize::try_from(p.index).ok().and_then(|i| t.states.get(i)))
                .and_then(|s| s.reassignment.clone());
            let voter_count = {
                let m = group.raft.metrics();
                let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
                m.membership_config.membership().voter_ids().count()
            };
            if !isr.is_empty() && isr.len() < voter_count {
                out.under_replicated += 1;
            }
            if !isr.is_empty() && isr.len() < p.settings().min_insync_replicas {
                out.under_min_isr += 1;
            }
            for (replica, lag_entries, caught_up_age) in group.follower_lag() {
                if let Some((original, _)) = &moving {
                    let adding = i32::try_from(replica).is_ok_and(|r| !original.contains(&r));
                    if adding {
                        out.reassignment_entries_remaining += lag_entries;
                    }
                }
                out.followers.push(crate::metrics::FollowerSample {
                    topic: p.topic.clone(),
                    partition: p.index,
                    replica,
                    lag_entries,
                    caught_up_age,
                });
            }
        }
        out
    }

    /// Clean shutdown: leave the cluster (fence this broker so clients go elsewhere at once), then
    /// fsync and close every log and stop the embedded controller.
    pub async fn shutdown(&self) {
        // Controlled shutdown: leadership moves to in-sync replicas first, so clients find a
        // leader at once instead of after an election timeout.
        self.replication
            .move_leadership_away(Duration::from_secs(5))
            .await;
        self.cluster.fence_self().await;
        self.replicas.shutdown().await;
        self.replication_stop.cancel();
        self.cluster.shutdown().await;
    }
}

/// The replication layer's timing from the broker config.
fn replication_settings(cfg: &BrokerConfig) -> ReplicationSettings {
    ReplicationSettings {
        heartbeat_interval: Duration::from_millis(cfg.replica_heartbeat_interval_ms),
        election_timeout: Duration::from_millis(cfg.replica_election_timeout_ms),
        lag_max: Duration::from_millis(cfg.replica_lag_time_max_ms),
    }
}

/// Waits (up to `patience`, blocking) until every hosted partition whose only voter is this
/// broker leads: those need nobody else to elect it.
fn wait_for_sole_leaderships(replicas: &ReplicaManager, patience: Duration) {
    let me = replicas.replication().node_id();
    let deadline = std::time::Instant::now() + patience;
    loop {
        let pending = replicas
            .all()
            .iter()
            .filter(|p| p.group().replicas() == [me] && !p.is_leader())
            .count();
        if pending == 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes the Raft leaders' reports to the metadata quorum (batched), after the group
/// coordinator loaded the `__consumer_offsets` partitions among them, so FindCoordinator never
/// sends a client to a coordinator that is still loading.
async fn report_leadership(
    link: Arc<ClusterLink>,
    groups: Arc<GroupCoordinator>,
    mut reports: tokio::sync::mpsc::UnboundedReceiver<Vec<LeaderReport>>,
    cancel: CancellationToken,
) {
    loop {
        let mut batch = tokio::select! {
            _ = cancel.cancelled() => return,
            r = reports.recv() => match r { Some(b) => b, None => return },
        };
        while let Ok(more) = reports.try_recv() {
            batch.extend(more);
        }
        // The latest report of each partition.
        let mut latest: HashMap<(Uuid, i32), LeaderReport> = HashMap::new();
        for r in batch {
            latest.insert((r.group.topic_id, r.group.partition), r);
        }
        let view = link.view();
        let offsets_id = view.topics.get(crate::group::OFFSETS_TOPIC).map(|t| t.id);
        if latest.keys().any(|(t, _)| Some(*t) == offsets_id) {
            let g = groups.clone();
            match tokio::task::spawn_blocking(move || g.sync_leadership()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "consumer groups only partly loaded"),
                Err(e) => tracing::error!(error = %e, "consumer group loading task failed"),
            }
        }
        let partitions = latest
            .into_values()
            .map(|r| LeadershipReport {
                topic_id: r.group.topic_id,
                partition: r.group.partition,
                leader_epoch: i32::try_from(r.term).unwrap_or(i32::MAX),
                isr: r
                    .isr
                    .into_iter()
                    .filter_map(|b| i32::try_from(b).ok())
                    .collect(),
            })
            .collect();
        let command = Command::ReportLeadership {
            broker_id: link.broker_id(),
            broker_epoch: link.broker_epoch(),
            partitions,
        };
        let written = tokio::select! {
            _ = cancel.cancelled() => return,
            w = link.propose(command) => w,
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot report partition leadership; the next change reports again");
        }
    }
}

/// The group coordinator's settings from the broker config.
fn coordinator_config(cfg: &BrokerConfig) -> CoordinatorConfig {
    CoordinatorConfig {
        offsets_topic_num_partitions: cfg.offsets_topic_num_partitions,
        offsets_topic_replication_factor: cfg.offsets_topic_replication_factor,
        initial_rebalance_delay_ms: i64::try_from(cfg.group_initial_rebalance_delay_ms)
            .unwrap_or(i64::MAX),
        offsets_retention_ms: cfg.offsets_retention_minutes.saturating_mul(60_000),
        consumer: ConsumerConfig {
            heartbeat_interval_ms: cfg.group_consumer_heartbeat_interval_ms,
            session_timeout_ms: cfg.group_consumer_session_timeout_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::BrokerConfig;

    fn single_node(dir: &std::path::Path) -> RuntimeConfig {
        BrokerConfig {
            data_dir: dir.to_path_buf(),
            metrics_listen: "off".into(),
            object_store: "off".into(),
            node_id: 3,
            ..Default::default()
        }
        .validate()
        .expect("config")
    }

    /// A data dir written before the metadata quorum (its `metadata.json`) is imported: the topics
    /// keep their ids, configs and partitions, the producer ids continue above the old high mark,
    /// and the file is retired so a restart does not import it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_node_metadata_json_is_imported_into_the_quorum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Uuid::from_u128(42);
        {
            let mut legacy = MetadataStore::open(dir.path(), Some("legacy-cluster")).expect("open");
            legacy
                .update(|st| {
                    st.topics.insert(
                        "old".into(),
                        crate::metadata_store::TopicRecord {
                            name: "old".into(),
                            id,
                            partitions: 2,
                            configs: BTreeMap::from([("retention.ms".into(), "1234".into())]),
                        },
                    );
                    st.producer_id_high_mark = 5_000;
                    st.broker_dynamic_default =
                        BTreeMap::from([("log.retention.bytes".into(), "999".into())]);
                    Ok(())
                })
                .expect("update");
        }
        let broker = Services::open(single_node(dir.path())).await.expect("open");
        assert_eq!(broker.cluster_id(), "legacy-cluster");
        let t = broker.topic("old").expect("imported topic");
        assert_eq!((t.id, t.partitions), (id, 2));
        assert_eq!(t.configs["retention.ms"], "1234");
        assert_eq!(
            t.states[1].leader, 3,
            "imported partitions are led by the importing broker"
        );
        assert!(broker.leader_partition("old", 1).is_ok());
        assert_eq!(broker.view().cluster_configs["log.retention.bytes"], "999");
        assert!(broker.admin.next_producer_id().await.expect("pid") >= 5_000);
        assert!(
            !MetadataStore::exists(dir.path()),
            "metadata.json is retired"
        );
        broker.shutdown().await;

        let again = Services::open(single_node(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(again.cluster_id(), "legacy-cluster");
        assert_eq!(again.topic("old").map(|t| t.id), Some(id));
        again.shutdown().await;
    }

    /// Partitions led elsewhere (or by nobody) are refused with NOT_LEADER_OR_FOLLOWER, unknown
    /// ones with UNKNOWN_TOPIC_OR_PARTITION; replication factors other than 1 are refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routing_and_replication_factor_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Services::open(single_node(dir.path())).await.expect("open");
        broker
            .admin
            .create_topic("t", 2, -1, BTreeMap::new(), false)
            .await
            .expect("create");
        assert!(broker.leader_partition("t", 0).is_ok());
        assert_eq!(
            broker
                .leader_partition("t", 2)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err(3)
        );
        assert_eq!(
            broker
                .leader_partition("u", 0)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err(3)
        );
        let rf = broker
            .admin
            .create_topic("r", 1, 3, BTreeMap::new(), false)
            .await
            .expect_err("rf 3");
        assert_eq!(rf.code(), 38, "INVALID_REPLICATION_FACTOR");
        let unknown = broker
            .admin
            .create_topic_with("x", -1, -1, Some(vec![vec![9]]), BTreeMap::new(), false)
            .await
            .expect_err("unknown broker");
        assert_eq!(unknown.code(), 39, "INVALID_REPLICA_ASSIGNMENT");
        // Fence this broker (as a controlled shutdown does): its partitions lose their leader.
        broker.cluster.fence_self().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while broker.view().partition("t", 0).map(|p| p.leader) != Some(-1) {
            assert!(std::time::Instant::now() < deadline, "fencing not applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            broker
                .leader_partition("t", 0)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err(6)
        );
        broker.shutdown().await;
    }
}
