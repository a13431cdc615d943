//! Acting on metadata changes: this broker opens the partitions assigned to it, deletes the data of
//! deleted topics, applies config changes and leader epochs, and only then publishes the new view,
//! so a handler that sees a partition in the view finds its log open.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::view::ClusterView;
use crate::broker::Broker;
use crate::error::BrokerError;

/// Brings the hosted partitions in line with `next` (`prev`: the view acted on before, if any).
pub fn reconcile(
    broker: &Broker,
    prev: Option<&ClusterView>,
    next: &ClusterView,
) -> Result<(), BrokerError> {
    let me = broker.node_id();
    let layers_changed = prev.is_none_or(|p| {
        p.cluster_configs != next.cluster_configs
            || p.broker_configs_of(me) != next.broker_configs_of(me)
    });
    if layers_changed {
        *broker.layers.write() = next.layers(&broker.config.broker, me);
    }
    // Partitions whose topic is gone (or was re-created under a new id) or that moved away.
    let mut doomed = HashSet::new();
    for p in broker.logs.all() {
        let keep = next.topics.get(&p.topic).is_some_and(|t| {
            t.id == p.topic_id
                && usize::try_from(p.index)
                    .ok()
                    .and_then(|i| t.states.get(i))
                    .is_some_and(|s| s.replicas.contains(&me))
        });
        if !keep {
            doomed.insert(p.topic.clone());
        }
    }
    for topic in &doomed {
        tracing::info!(topic = %topic, "removing local data of a topic deleted (or moved) in the cluster");
        broker.logs.delete_topic(topic);
    }
    let layers = broker.layers.read().clone();
    let mut first_error = None;
    for t in next.topics.values() {
        let before = prev.and_then(|p| p.topics.get(&t.name));
        let unchanged_configs =
            !layers_changed && before.is_some_and(|b| b.id == t.id && b.configs == t.configs);
        let settings = layers.topic_settings(&t.configs);
        for (i, state) in t.states.iter().enumerate() {
            if !state.replicas.contains(&me) {
                continue;
            }
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            match broker.logs.get(&t.name, index) {
                Some(p) => {
                    if !unchanged_configs {
                        p.set_settings(settings.clone());
                    }
                    p.set_leader_epoch(state.leader_epoch);
                }
                None => {
                    match broker.logs.open_partition(
                        &t.name,
                        t.id,
                        index,
                        settings.clone(),
                        state.leader_epoch,
                    ) {
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(topic = %t.name, partition = index, error = %e, "cannot open an assigned partition");
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Follows the controller's state machine until `cancel`: rebuilds the view after every applied
/// change, acts on it, publishes it.
pub async fn run_reconciler(broker: Arc<Broker>, cancel: CancellationToken) {
    let mut applied = broker.cluster.subscribe_applied();
    // Entries applied between the start-up view and this subscription are caught up at once.
    applied.mark_changed();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
        let index = *applied.borrow_and_update();
        let next = broker
            .cluster
            .read_state(|st| ClusterView::from_state(st, index));
        let prev = broker.cluster.view();
        if !prev.same_assignments(&next) {
            let b = broker.clone();
            let n = next.clone();
            let result = tokio::task::spawn_blocking(move || {
                let prev = b.cluster.view();
                reconcile(&b, Some(&prev), &n)
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "metadata change only partly applied"),
                Err(e) => tracing::error!(error = %e, "metadata reconcile task failed"),
            }
        }
        broker.cluster.publish(next);
    }
}
