//! The broker's side of the metadata quorum (see `docs/rfcs/0005-metadata-quorum.md`).
//!
//! - `link.rs`: the embedded controller node, metadata writes, registration and heartbeats.
//! - `remote.rs`: a broker-only node's link to controllers elsewhere (`--roles broker`).
//! - `view.rs`: the metadata cache every handler reads.
//! - `reconcile.rs`: acting on metadata changes (opening, deleting and re-configuring partitions).
//! - `balance.rs`: automatic leader rebalancing (handing partitions back to preferred replicas).
//! - `reassign.rs`: partition reassignment, the leader's side (learners, voter change, completion).
//! - this file: carrying metadata over from the single-node `metadata.json` format, which is also
//!   the format of the copy kept in the object store.

pub mod balance;
mod link;
pub mod reassign;
mod reconcile;
mod remote;
mod view;

use std::collections::BTreeMap;

use controller::state::{BrokerId, ClusterImport, ImportedTopic, PartitionAssignment};

pub use link::{command_error, controller_config, now_ms, ClusterLink, METADATA_DIR};
pub use reconcile::{reconcile, run_reconciler};
pub use view::{ClusterView, PartitionView, TopicView};

use crate::metadata_store::{MetadataState as LegacyState, TopicRecord, FORMAT_VERSION};

/// Metadata of a single-node broker (its old `metadata.json`, or the object store copy) as an
/// import into a new cluster: every partition is placed on `broker_id`, which holds the data.
pub fn import_from_legacy(state: &LegacyState, broker_id: BrokerId) -> ClusterImport {
    let topics = state
        .topics
        .values()
        .map(|t| ImportedTopic {
            name: t.name.clone(),
            topic_id: t.id,
            partitions: (0..t.partitions.max(0))
                .map(|_| PartitionAssignment {
                    replicas: vec![broker_id],
                })
                .collect(),
            configs: t.configs.clone(),
        })
        .collect();
    let mut broker_configs = BTreeMap::new();
    if !state.broker_dynamic.is_empty() {
        broker_configs.insert(broker_id, state.broker_dynamic.clone());
    }
    ClusterImport {
        topics,
        cluster_configs: state.broker_dynamic_default.clone(),
        broker_configs,
        next_producer_id: state.producer_id_high_mark,
        pending_remote_deletions: state.pending_remote_deletions.clone(),
    }
}

/// The copy of the cluster metadata kept in the object store, in the `metadata.json` format, so
/// that a cluster that lost every local disk can start again from the bucket.
pub fn legacy_copy(view: &ClusterView, broker_id: BrokerId) -> LegacyState {
    LegacyState {
        version: FORMAT_VERSION,
        cluster_id: view.cluster_id.clone(),
        topics: view
            .topics
            .values()
            .map(|t| {
                (
                    t.name.clone(),
                    TopicRecord {
                        name: t.name.clone(),
                        id: t.id,
                        partitions: t.partitions,
                        configs: t.configs.clone(),
                    },
                )
            })
            .collect(),
        broker_dynamic_default: view.cluster_configs.clone(),
        broker_dynamic: view.broker_configs_of(broker_id),
        producer_id_high_mark: view.next_producer_id,
        pending_remote_deletions: view.pending_remote_deletions.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn legacy_state_round_trips_through_an_import() {
        let mut legacy = LegacyState {
            version: FORMAT_VERSION,
            cluster_id: "c".into(),
            topics: BTreeMap::new(),
            broker_dynamic_default: BTreeMap::from([("log.retention.ms".into(), "9".into())]),
            broker_dynamic: BTreeMap::from([("log.retention.bytes".into(), "7".into())]),
            producer_id_high_mark: 3000,
            pending_remote_deletions: [Uuid::from_u128(3)].into(),
        };
        legacy.topics.insert(
            "t".into(),
            TopicRecord {
                name: "t".into(),
                id: Uuid::from_u128(1),
                partitions: 3,
                configs: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
            },
        );
        let import = import_from_legacy(&legacy, 5);
        assert_eq!(import.topics[0].partitions.len(), 3);
        assert!(import.topics[0]
            .partitions
            .iter()
            .all(|p| p.replicas == vec![5]));
        let mut st = controller::MetadataState::default();
        controller::apply(
            &mut st,
            controller::Command::RegisterBroker {
                broker_id: 5,
                incarnation_id: Uuid::from_u128(9),
                listeners: vec![],
                rack: None,
                now_ms: 0,
            },
        )
        .expect("register");
        controller::apply(
            &mut st,
            controller::Command::InitCluster {
                cluster_id: "c".into(),
                import: Some(import),
            },
        )
        .expect("init");
        let view = ClusterView::from_state(&st, 2);
        let copy = legacy_copy(&view, 5);
        assert_eq!(copy, legacy);
    }
}
