//! The replication driver (RFC 0006): one task per broker doing what openraft's per-group timers
//! would do, at a cost independent of how many groups are idle.
//!
//! Every tick (a quarter of the heartbeat interval) it walks the groups once:
//! - a group this node leads is listed in the next coalesced heartbeat to each of its members,
//!   and its ISR is updated; when it becomes ready (an entry of its term applied) or its ISR
//!   changes, a [`LeaderReport`] goes to the metadata layer;
//! - a group this node follows, or a pristine one, starts an election (initializes) when it has
//!   heard from no live leader for its randomized election timeout;
//! - a group whose leadership here ended drops its waiting proposals.
//!
//! Every heartbeat interval it sends each peer one heartbeat (also for peers it leads nothing
//! with: their answers tell a leader whether its quorum is alive).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::types::GroupId;
use super::Replication;

/// A partition this node leads and has made ready, with the ISR it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderReport {
    /// The partition.
    pub group: GroupId,
    /// Raft term (the Kafka leader epoch).
    pub term: u64,
    /// In-sync replicas (this node included).
    pub isr: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Seen {
    ready: bool,
    term: u64,
    isr: Vec<u64>,
}

/// Runs the driver until `cancel`; leader reports go to `reports`.
pub async fn run(
    rt: Arc<Replication>,
    reports: mpsc::UnboundedSender<Vec<LeaderReport>>,
    cancel: CancellationToken,
) {
    let settings = rt.settings();
    let tick = (settings.heartbeat_interval / 4).max(Duration::from_millis(20));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heartbeat = Instant::now() - settings.heartbeat_interval;
    let mut seen: HashMap<GroupId, Seen> = HashMap::new();
    let me = rt.node_id();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let fenced = rt.fenced();
        let mut leads: HashMap<u64, Vec<(GroupId, u64)>> = HashMap::new();
        let mut out = Vec::new();
        let mut moved = false;
        let groups = rt.groups();
        let again = rt.take_rereport();
        let hosted: BTreeSet<GroupId> = groups.iter().map(|g| g.id).collect();
        seen.retain(|id, _| hosted.contains(id));
        for g in groups {
            let (state, term, _leader) = g.state();
            let before = seen.get(&g.id).cloned().unwrap_or_default();
            let now_seen = if state == ServerState::Leader {
                let members: Vec<u64> = {
                    let m = g.raft.metrics();
                    let m = m.borrow_watched();
                    m.membership_config
                        .membership()
                        .nodes()
                        .map(|(id, _)| *id)
                        .filter(|id| *id != me)
                        .collect()
                };
                for peer in members {
                    leads.entry(peer).or_default().push((g.id, term));
                }
                let isr = g.update_isr(me, settings.lag_max, &fenced);
                let ready = g.log.applied_term() == term;
                Seen { ready, term, isr }
            } else {
                if before.ready {
                    g.reset_isr();
                    g.log.abandon_proposals();
                    // A leader that just stepped down (a transfer, a higher term) waits a whole
                    // election timeout before campaigning: its last contact with a leader is
                    // from before it led, and a peer that has not heard from the new leader yet
                    // would grant it, taking the leadership straight back.
                    g.attempted();
                }
                let voter = {
                    let m = g.raft.metrics();
                    let m = m.borrow_watched();
                    let voters: BTreeSet<u64> =
                        m.membership_config.membership().voter_ids().collect();
                    if voters.is_empty() {
                        None
                    } else {
                        Some(voters.contains(&me))
                    }
                };
                let candidate = state == ServerState::Candidate;
                if g.election_due(settings.election_timeout, &fenced, candidate) {
                    match voter {
                        Some(true) => {
                            g.attempted();
                            tracing::debug!(partition = %g.label, term, "no live leader; asking for an election");
                            // Strata's pre-vote first, then a real election: openraft's own
                            // pre-vote honours its lease, which never lapses here (see
                            // `Replication::new`). Peers refuse while Strata's lease holds
                            // (`handle_frame`); this is only due once no live leader was heard
                            // from for the election timeout. Off the driver's loop: it waits
                            // for the peers' answers.
                            let rt = rt.clone();
                            let g = g.clone();
                            tokio::spawn(async move {
                                if rt.pre_vote(&g).await {
                                    if let Err(e) = g.raft.trigger().elect(false).await {
                                        tracing::warn!(partition = %g.label, error = %e, "cannot start an election");
                                    }
                                }
                            });
                        }
                        None => {
                            // Pristine and its preferred replica never reached it: initialize
                            // with the same replica set (identical configurations are safe).
                            g.attempted();
                            let voters: BTreeSet<u64> = g.replicas().into_iter().collect();
                            if voters.contains(&me) && g.may_initialize() {
                                tracing::info!(partition = %g.label, "no leader reached this new replica; initializing the group");
                                if let Err(e) = g.raft.initialize(voters).await {
                                    tracing::debug!(partition = %g.label, error = %e, "initialize refused");
                                }
                            }
                        }
                        Some(false) => {}
                    }
                }
                Seen {
                    ready: false,
                    term,
                    isr: Vec::new(),
                }
            };
            if now_seen.ready && (now_seen != before || again.contains(&g.id)) {
                out.push(LeaderReport {
                    group: g.id,
                    term,
                    isr: now_seen.isr.clone(),
                });
            }
            if now_seen.ready != before.ready {
                moved = true;
                if now_seen.ready {
                    rt.won_leadership();
                }
            }
            seen.insert(g.id, now_seen);
        }
        if moved {
            rt.leadership_changed();
        }
        if !out.is_empty() && reports.send(out).is_err() {
            return;
        }
        if last_heartbeat.elapsed() >= settings.heartbeat_interval {
            last_heartbeat = Instant::now();
            for peer in rt.transport().peers() {
                let list = leads.remove(&peer).unwrap_or_default();
                let rt = rt.clone();
                tokio::spawn(async move { rt.send_heartbeat(peer, list).await });
            }
        }
    }
}
