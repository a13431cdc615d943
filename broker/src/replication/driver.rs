//! The replication driver (RFC 0006): one task per broker doing what openraft's per-group timers
//! would do, at a cost independent of how many groups are idle.
//!
//! Every tick (half the heartbeat interval) it walks the groups once, reading each group's cached
//! role (no openraft call for an idle follower):
//! - a group this node leads is listed in the next coalesced heartbeat to each of its members,
//!   and its ISR is updated (every heartbeat interval, and every tick until it is reported); when it becomes ready (an entry of its term applied) or its ISR
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

use openraft::ServerState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::group::Seen;
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

/// Runs the driver until `cancel`; leader reports go to `reports`.
pub async fn run(
    rt: Arc<Replication>,
    reports: mpsc::UnboundedSender<Vec<LeaderReport>>,
    cancel: CancellationToken,
) {
    let settings = rt.settings();
    let tick = (settings.heartbeat_interval / 2).max(Duration::from_millis(20));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heartbeat = Instant::now() - settings.heartbeat_interval;
    let me = rt.node_id();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        // Heartbeats (and the ISR, which only needs their pace) every heartbeat interval; a
        // tick may come a little early.
        let beat = last_heartbeat.elapsed() + tick / 2 >= settings.heartbeat_interval;
        let fenced = rt.fenced();
        let mut leads: HashMap<u64, Vec<(GroupId, u64)>> = HashMap::new();
        let mut out = Vec::new();
        let mut moved = false;
        let groups = rt.groups();
        let again = rt.take_rereport();
        for g in groups {
            let (state, term, voter) = g.with_role(|r| {
                let voter = if r.voters.is_empty() {
                    None
                } else {
                    Some(r.voters.binary_search(&me).is_ok())
                };
                (r.state, r.term, voter)
            });
            let before = g.take_seen();
            let now_seen = if state == ServerState::Leader {
                if beat {
                    g.with_role(|r| {
                        for peer in r.members.iter().filter(|id| **id != me) {
                            leads.entry(*peer).or_default().push((g.id, term));
                        }
                    });
                }
                let ready = g.log.applied_term() == term;
                // The ISR at the heartbeat pace, and at every tick until the first report of
                // a leadership (so a new leader is reported within a tick).
                let isr = if beat || !before.ready || before.term != term || again.contains(&g.id) {
                    g.update_isr(me, settings.lag_max, &fenced)
                } else {
                    before.isr.clone()
                };
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
            g.put_seen(now_seen);
        }
        if moved {
            rt.leadership_changed();
        }
        if !out.is_empty() && reports.send(out).is_err() {
            return;
        }
        if beat {
            last_heartbeat = Instant::now();
            for peer in rt.transport().peers() {
                let list = leads.remove(&peer).unwrap_or_default();
                let rt = rt.clone();
                tokio::spawn(async move { rt.send_heartbeat(peer, list).await });
            }
        }
    }
}
