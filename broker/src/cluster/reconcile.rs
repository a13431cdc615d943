//! Acting on metadata changes: [`plan`] computes, from the previous and the next metadata view and
//! the replicas hosted here, the [`Transition`]s this broker must make (open the replicas assigned
//! to it, remove the ones that left it or whose topic is gone, apply config and replica-set
//! changes); the reconciler applies them to the [`ReplicaManager`] and only then publishes the new
//! view, so a handler that sees a partition in the view finds its replica open. Leadership is not
//! the metadata's to give: the partitions' Raft groups elect their leaders, who report to the
//! controller. The reconciler also hands the replication layer its peers' endpoints and the
//! fenced brokers. Entries that change nothing a view shows (broker heartbeats, told apart by the
//! metadata's `generation`) only advance the published index; the view is rebuilt for them at
//! most every `RECHECK`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::link::ClusterLink;
use super::view::ClusterView;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::replica::{PartitionKey, ReplicaManager, Transition};
use crate::replication::types::GroupId;

/// How often the reconciler rebuilds the view and re-checks leaderships while only heartbeats
/// arrive.
const RECHECK: Duration = Duration::from_secs(5);

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
                    replicas: state.replicas.clone(),
                    joining: state.joining(me),
                });
                continue;
            }
            if configs_changed {
                out.push(Transition::Reconfigure {
                    key,
                    settings: settings.clone(),
                });
            }
            let replicas_changed = before
                .and_then(|b| b.states.get(i))
                .is_none_or(|s| s.replicas != state.replicas);
            if replicas_changed {
                out.push(Transition::Replicas {
                    key,
                    replicas: state.replicas.clone(),
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
    let mut last_pass: Option<(u64, Instant)> = None;
    // Entries applied between the start-up view and this subscription are caught up at once.
    applied.mark_changed();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
        let index = *applied.borrow_and_update();
        // Broker heartbeats are most of the metadata log at idle and change nothing a view
        // shows: skip rebuilding the view (thousands of partitions) for them, except every
        // RECHECK, which also re-runs the leadership check below.
        let generation = link.read_state(|st| st.generation);
        if last_pass
            .is_some_and(|(g, at): (u64, Instant)| g == generation && at.elapsed() < RECHECK)
        {
            link.mark_reconciled(index);
            continue;
        }
        last_pass = Some((generation, Instant::now()));
        let next = link.read_state(|st| ClusterView::from_state(st, index));
        let prev = link.view();
        replicas
            .replication()
            .set_cluster(next.replication_endpoints(), next.fenced_brokers());
        // Leaderships the metadata does not show (this broker was fenced and came back, or a
        // report was lost), or with another ISR than this leader computed (fencing takes a
        // broker out of every ISR in the metadata alone): report them again.
        let me = cfg.node_id;
        let wrong: Vec<GroupId> = replicas
            .all()
            .iter()
            .filter(|p| p.is_leader())
            .filter(|p| {
                next.topic_by_id(p.topic_id)
                    .and_then(|t| usize::try_from(p.index).ok().and_then(|i| t.states.get(i)))
                    .is_some_and(|s| {
                        if s.leader != me || s.leader_epoch < p.leader_epoch() {
                            return true;
                        }
                        let isr = p.last_isr();
                        let mut shown = s.isr.clone();
                        shown.sort_unstable();
                        !isr.is_empty() && isr != shown
                    })
            })
            .map(|p| GroupId {
                topic_id: p.topic_id,
                partition: p.index,
            })
            .collect();
        if !wrong.is_empty() {
            replicas.replication().rereport(wrong);
        }
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
                    isr: r.to_vec(),
                    reassignment: None,
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
    /// new ones; an assignment opens the replica with its replica set.
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
        let opened: Vec<(PartitionKey, Vec<i32>)> = plan
            .iter()
            .filter_map(|t| match t {
                Transition::Open { key, replicas, .. } => Some((*key, replicas.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(opened, vec![(key(2, 0), vec![1]), (key(3, 1), vec![2, 1])]);
    }

    /// A reassignment that keeps this broker changes the replica set only; a leader change is not
    /// the reconciler's business.
    #[test]
    fn replica_set_changes_become_transitions_and_leaders_do_not() {
        let cfg = BrokerConfig::default();
        let before = view(vec![topic("t", 1, &[&[1, 2], &[1, 2]])]);
        let mut after = before.clone();
        if let Some(t) = after.topics.get_mut("t") {
            t.states[0].leader = 2;
            t.states[0].leader_epoch = 1;
            t.states[1].replicas = vec![1, 2, 3];
        }
        let plan = plan(Some(&before), &after, &[key(1, 0), key(1, 1)], &cfg, 1);
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(matches!(
            &plan[0],
            Transition::Replicas { key: k, replicas } if *k == key(1, 1) && replicas == &vec![1, 2, 3]
        ));
    }
}
