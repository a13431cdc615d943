//! Automatic leader rebalancing (`auto.leader.rebalance.enable`; RFC 0006 "Leadership balance").
//!
//! Owns no durable state. Every `leader.imbalance.check.interval.seconds` each broker reads the
//! applied metadata and computes, for every broker B, B's *imbalance*: the share of partitions
//! whose preferred replica (the first in the replica set) is B but which another broker leads.
//! When B's imbalance is above `leader.imbalance.per.broker.percentage`, every partition this
//! broker leads whose preferred replica is B, live and in the ISR, is asked to hand its
//! leadership to B (a Raft leadership transfer: B campaigns with its log up to date). Each broker
//! acts only on partitions it leads, so the brokers need no coordination; Kafka's controller makes
//! the same computation centrally. A returning broker thus takes its share back once it caught up,
//! instead of leaving one broker leading everything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::link::ClusterLink;
use super::view::ClusterView;
use crate::replication::types::GroupId;
use crate::replication::Replication;

/// The partitions broker `me` leads that should go back to their preferred replica: `(group,
/// preferred broker)`, for preferred brokers whose imbalance is above `percentage`.
pub fn plan(view: &ClusterView, me: i32, percentage: u32) -> Vec<(GroupId, i32)> {
    // preferred broker -> (partitions it prefers, of which led elsewhere)
    let mut share: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    for t in view.topics.values() {
        for st in &t.states {
            let Some(&preferred) = st.replicas.first() else {
                continue;
            };
            let e = share.entry(preferred).or_default();
            e.0 += 1;
            if st.leader != preferred {
                e.1 += 1;
            }
        }
    }
    let over: Vec<i32> = share
        .iter()
        .filter(|(_, (total, elsewhere))| {
            *total > 0 && elsewhere * 100 > u64::from(percentage) * total
        })
        .map(|(b, _)| *b)
        .collect();
    let mut moves = Vec::new();
    for t in view.topics.values() {
        for (index, st) in t.states.iter().enumerate() {
            let Some(&preferred) = st.replicas.first() else {
                continue;
            };
            if st.leader != me
                || preferred == me
                || !over.contains(&preferred)
                || !view.is_live(preferred)
                || !st.isr.contains(&preferred)
            {
                continue;
            }
            let Ok(partition) = i32::try_from(index) else {
                continue;
            };
            moves.push((
                GroupId {
                    topic_id: t.id,
                    partition,
                },
                preferred,
            ));
        }
    }
    moves
}

/// Checks leadership balance every `interval` until `cancel`.
pub async fn run(
    link: Arc<ClusterLink>,
    replication: Arc<Replication>,
    interval: Duration,
    percentage: u32,
    cancel: CancellationToken,
) {
    let me = link.broker_id();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let moves = plan(&link.view(), me, percentage);
        if moves.is_empty() {
            continue;
        }
        tracing::info!(
            partitions = moves.len(),
            "leadership imbalance: handing partitions back to their preferred replicas"
        );
        for (group, to) in moves {
            let Ok(to) = u64::try_from(to) else { continue };
            let asked = tokio::select! {
                _ = cancel.cancelled() => return,
                r = replication.transfer_leadership(group, to) => r,
            };
            if let Err(e) = asked {
                tracing::debug!(%group, to, error = %e, "preferred leader transfer not started");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::view::{PartitionView, TopicView};
    use controller::state::BrokerRegistration;
    use uuid::Uuid;

    fn view(parts: &[(&[i32], i32, &[i32])], live: &[i32]) -> ClusterView {
        let mut v = ClusterView::default();
        for b in live {
            v.brokers.insert(
                *b,
                BrokerRegistration {
                    id: *b,
                    incarnation_id: Uuid::nil(),
                    listeners: Vec::new(),
                    rack: None,
                    epoch: 1,
                    fenced: false,
                    last_heartbeat_ms: 0,
                },
            );
        }
        v.topics.insert(
            "t".into(),
            TopicView {
                name: "t".into(),
                id: Uuid::from_u128(7),
                partitions: i32::try_from(parts.len()).unwrap(),
                configs: BTreeMap::new(),
                states: parts
                    .iter()
                    .map(|(replicas, leader, isr)| PartitionView {
                        replicas: replicas.to_vec(),
                        leader: *leader,
                        leader_epoch: 1,
                        isr: isr.to_vec(),
                        reassignment: None,
                    })
                    .collect(),
            },
        );
        v
    }

    #[test]
    fn a_returned_broker_gets_its_preferred_partitions_back_from_their_leaders() {
        // Broker 1 prefers p0 and p3, both led by 2 after 1's restart; 3's are in place.
        let v = view(
            &[
                (&[1, 2, 3], 2, &[1, 2, 3]),
                (&[2, 3, 1], 2, &[1, 2, 3]),
                (&[3, 1, 2], 3, &[1, 2, 3]),
                (&[1, 3, 2], 3, &[1, 2, 3]),
            ],
            &[1, 2, 3],
        );
        let by_2: Vec<i32> = plan(&v, 2, 10)
            .iter()
            .map(|(g, to)| {
                assert_eq!(*to, 1);
                g.partition
            })
            .collect();
        assert_eq!(by_2, vec![0]);
        let by_3: Vec<i32> = plan(&v, 3, 10).iter().map(|(g, _)| g.partition).collect();
        assert_eq!(by_3, vec![3]);
        assert!(plan(&v, 1, 10).is_empty(), "broker 1 leads nothing");
    }

    #[test]
    fn nothing_moves_to_a_replica_out_of_the_isr_or_fenced_or_below_the_threshold() {
        let out_of_isr = view(&[(&[1, 2, 3], 2, &[2, 3])], &[1, 2, 3]);
        assert!(plan(&out_of_isr, 2, 10).is_empty());
        let dead = view(&[(&[1, 2, 3], 2, &[1, 2, 3])], &[2, 3]);
        assert!(plan(&dead, 2, 10).is_empty());
        // 1 of 10 preferred partitions led elsewhere is 10 %: not above 10 %.
        let mut parts: Vec<(&[i32], i32, &[i32])> = vec![(&[1, 2, 3], 1, &[1, 2, 3]); 9];
        parts.push((&[1, 2, 3], 2, &[1, 2, 3]));
        let balanced = view(&parts, &[1, 2, 3]);
        assert!(plan(&balanced, 2, 10).is_empty());
        assert_eq!(plan(&balanced, 2, 5).len(), 1);
    }
}
