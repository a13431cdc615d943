//! Acting on metadata changes: [`plan`] computes, from the previous and the next metadata view and
//! the replicas hosted here, the [`Transition`]s this broker must make (open the replicas assigned
//! to it, remove the ones that left it or whose topic is gone, apply config and leadership
//! changes); the reconciler applies them to the [`ReplicaManager`] and only then publishes the new
//! view, so a handler that sees a partition in the view finds its replica open.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::link::ClusterLink;
use super::view::ClusterView;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::replica::{PartitionKey, ReplicaManager, Transition};

/// The transitions that bring the replicas hosted here (`hosted`, with their topic names) in line
/// with `next`; `prev` is the view acted on before, if any. Removals come first, so a topic
/// re-created under the same name frees its directory before the new one opens it.
pub fn plan(
    prev: Option<&ClusterView>,
    next: &ClusterView,
    hosted: &[PartitionKey],
    cfg: &BrokerConfig,
    me: i32,
) -> Vec<Transition> {
    let mut out = Vec::new();
    for key in hosted {
        let assigned = next
            .topic_by_id(key.topic_id)
            .and_then(|t| {
                usize::try_from(key.partition)
                    .ok()
                    .and_then(|i| t.states.get(i))
            })
            .is_some_and(|s| s.replicas.contains(&me));
        if !assigned {
            out.push(Transition::Remove { key: *key });
        }
    }
    let layers_changed = prev.is_none_or(|p| {
        p.cluster_configs != next.cluster_configs
            || p.broker_configs_of(me) != next.broker_configs_of(me)
    });
    let layers = next.layers(cfg, me);
    for t in next.topics.values() {
        let before = prev.and_then(|p| p.topic_by_id(t.id));
        let configs_changed = layers_changed || before.is_none_or(|b| b.configs != t.configs);
        let settings = layers.topic_settings(&t.configs);
        for (i, state) in t.states.iter().enumerate() {
            if !state.replicas.contains(&me) {
                continue;
            }
            let key = PartitionKey {
                topic_id: t.id,
                partition: i32::try_from(i).unwrap_or(i32::MAX),
            };
            let is_new = !hosted.contains(&key);
            if is_new {
                out.push(Transition::Open {
                    key,
                    topic: t.name.clone(),
                    settings: settings.clone(),
                });
            } else if configs_changed {
                out.push(Transition::Reconfigure {
                    key,
                    settings: settings.clone(),
                });
            }
            let role_changed = before
                .and_then(|b| b.states.get(i))
                .is_none_or(|s| s.leader != state.leader || s.leader_epoch != state.leader_epoch);
            if is_new || role_changed {
                out.push(if state.leader == me {
                    Transition::BecomeLeader {
                        key,
                        epoch: state.leader_epoch,
                    }
                } else {
                    Transition::BecomeFollower {
                        key,
                        epoch: state.leader_epoch,
                        leader: state.leader,
                    }
                });
            }
        }
    }
    out
}

/// Brings the hosted replicas in line with `next` (`prev`: the view acted on before, if any).
/// Blocking: opens logs.
pub fn reconcile(
    replicas: &ReplicaManager,
    cfg: &BrokerConfig,
    prev: Option<&ClusterView>,
    next: &ClusterView,
) -> Result<(), BrokerError> {
    let hosted: Vec<PartitionKey> = replicas
        .all()
        .iter()
        .map(|p| PartitionKey {
            topic_id: p.topic_id,
            partition: p.index,
        })
        .collect();
    let transitions = plan(prev, next, &hosted, cfg, cfg.node_id);
    if transitions.is_empty() {
        return Ok(());
    }
    replicas.apply(transitions)
}

/// Follows the controller's state machine until `cancel`: rebuilds the view after every applied
/// change, acts on it, publishes it.
pub async fn run_reconciler(
    link: Arc<ClusterLink>,
    replicas: Arc<ReplicaManager>,
    cfg: Arc<BrokerConfig>,
    cancel: CancellationToken,
) {
    let mut applied = link.subscribe_applied();
    // Entries applied between the start-up view and this subscription are caught up at once.
    applied.mark_changed();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
        let index = *applied.borrow_and_update();
        let next = link.read_state(|st| ClusterView::from_state(st, index));
        let prev = link.view();
        if !prev.same_assignments(&next) {
            let replicas = replicas.clone();
            let cfg = cfg.clone();
            let n = next.clone();
            let result =
                tokio::task::spawn_blocking(move || reconcile(&replicas, &cfg, Some(&prev), &n))
                    .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "metadata change only partly applied"),
                Err(e) => tracing::error!(error = %e, "metadata reconcile task failed"),
            }
        }
        link.publish(next);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::cluster::{PartitionView, TopicView};

    fn topic(name: &str, id: u128, replicas: &[&[i32]]) -> TopicView {
        TopicView {
            name: name.into(),
            id: Uuid::from_u128(id),
            partitions: i32::try_from(replicas.len()).expect("small"),
            configs: BTreeMap::new(),
            states: replicas
                .iter()
                .map(|r| PartitionView {
                    replicas: r.to_vec(),
                    leader: r[0],
                    leader_epoch: 0,
                })
                .collect(),
        }
    }

    fn view(topics: Vec<TopicView>) -> ClusterView {
        ClusterView {
            topics: topics.into_iter().map(|t| (t.name.clone(), t)).collect(),
            ..Default::default()
        }
    }

    fn key(id: u128, partition: i32) -> PartitionKey {
        PartitionKey {
            topic_id: Uuid::from_u128(id),
            partition,
        }
    }

    /// Moving one partition of a topic away removes that replica only; the others stay.
    #[test]
    fn only_the_partitions_that_left_are_removed() {
        let cfg = BrokerConfig::default();
        let before = view(vec![topic("t", 1, &[&[1], &[1], &[1]])]);
        let after = view(vec![topic("t", 1, &[&[1], &[2], &[1]])]);
        let hosted = [key(1, 0), key(1, 1), key(1, 2)];
        let plan = plan(Some(&before), &after, &hosted, &cfg, 1);
        let removed: Vec<PartitionKey> = plan
            .iter()
            .filter_map(|t| match t {
                Transition::Remove { key } => Some(*key),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec![key(1, 1)]);
        assert!(
            !plan.iter().any(|t| matches!(t, Transition::Open { .. })),
            "nothing new to open: {plan:?}"
        );
    }

    /// A topic re-created under its name (a new id) removes the old replicas before opening the
    /// new ones, and a new assignment opens the replica and sets its role.
    #[test]
    fn recreated_topics_remove_before_open() {
        let cfg = BrokerConfig::default();
        let before = view(vec![topic("t", 1, &[&[1]])]);
        let after = view(vec![
            topic("t", 2, &[&[1]]),
            topic("u", 3, &[&[2], &[2, 1]]),
        ]);
        let plan = plan(Some(&before), &after, &[key(1, 0)], &cfg, 1);
        let first_open = plan
            .iter()
            .position(|t| matches!(t, Transition::Open { .. }))
            .expect("opens");
        assert!(matches!(plan[0], Transition::Remove { key: k } if k == key(1, 0)));
        assert!(first_open > 0);
        let opened: Vec<PartitionKey> = plan
            .iter()
            .filter_map(|t| match t {
                Transition::Open { key, .. } => Some(*key),
                _ => None,
            })
            .collect();
        assert_eq!(opened.len(), 2);
        assert!(opened.contains(&key(2, 0)) && opened.contains(&key(3, 1)));
        assert!(plan
            .iter()
            .any(|t| matches!(t, Transition::BecomeLeader { key: k, .. } if *k == key(2, 0))));
        assert!(plan.iter().any(
            |t| matches!(t, Transition::BecomeFollower { key: k, leader: 2, .. } if *k == key(3, 1))
        ));
    }

    /// A leader change only moves roles; unchanged partitions produce no transitions.
    #[test]
    fn leadership_changes_become_role_transitions() {
        let cfg = BrokerConfig::default();
        let before = view(vec![topic("t", 1, &[&[1, 2], &[1, 2]])]);
        let mut after = before.clone();
        if let Some(t) = after.topics.get_mut("t") {
            t.states[1].leader = 2;
            t.states[1].leader_epoch = 1;
        }
        let plan = plan(Some(&before), &after, &[key(1, 0), key(1, 1)], &cfg, 1);
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(matches!(
            plan[0],
            Transition::BecomeFollower { key: k, epoch: 1, leader: 2 } if k == key(1, 1)
        ));
    }
}
