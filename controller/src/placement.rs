//! Replica placement for new partitions: a pure function of the metadata and the current load.
//!
//! Runs at the proposer (the controller leader) before a `CreateTopic`/`CreatePartitions` command
//! is written, so the log carries explicit replica sets and replay never re-runs placement.
//!
//! Greedy, one partition at a time, over unfenced brokers only:
//! - the leader (first replica) is a broker with the fewest leaderships; when enough brokers share
//!   the lowest replica count to fill the whole set, it is taken from them so that replica counts
//!   cannot drift apart; ties prefer brokers with more replicas (they will be skipped as followers);
//! - followers prefer racks not yet used by this partition, then the fewest replicas, then the
//!   fewest leaderships;
//! - remaining ties rotate with the partition index, so equal brokers take turns.
//!
//! With no racks (or one rack) and no prior load, replica counts and leader counts each differ by
//! at most one between brokers (checked by proptest below). With racks, replicas of one partition
//! are on distinct racks whenever there are at least as many racks as replicas.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::state::BrokerId;
use crate::state::MetadataState;

/// Why placement is impossible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// INVALID_REPLICATION_FACTOR: zero.
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
    /// INVALID_PARTITIONS: zero.
    #[error("partition count must be at least 1")]
    ZeroPartitions,
    /// INVALID_REPLICATION_FACTOR: more replicas than unfenced brokers.
    #[error(
        "replication factor {replication_factor} is larger than the {available} unfenced brokers"
    )]
    InsufficientBrokers {
        /// Requested replication factor.
        replication_factor: u16,
        /// Unfenced brokers.
        available: usize,
    },
}

/// Choose replica sets for `num_partitions` new partitions of `replication_factor` replicas each.
///
/// `existing` is the load to balance against (usually [`MetadataState::all_replica_sets`]); its
/// first replica counts as a leadership. Brokers not unfenced in `state` are ignored.
pub fn place(
    state: &MetadataState,
    num_partitions: u32,
    replication_factor: u16,
    existing: &[Vec<BrokerId>],
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    if replication_factor == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    if num_partitions == 0 {
        return Err(PlacementError::ZeroPartitions);
    }
    let brokers: Vec<(BrokerId, Option<&str>)> = state
        .unfenced_brokers()
        .map(|b| (b.id, b.rack.as_deref()))
        .collect();
    let n = brokers.len();
    let rf = usize::from(replication_factor);
    if rf > n {
        return Err(PlacementError::InsufficientBrokers {
            replication_factor,
            available: n,
        });
    }
    let index_of = |id: BrokerId| brokers.iter().position(|(b, _)| *b == id);
    let mut replicas = vec![0u64; n];
    let mut leaders = vec![0u64; n];
    for set in existing {
        for (j, id) in set.iter().enumerate() {
            if let Some(i) = index_of(*id) {
                replicas[i] += 1;
                if j == 0 {
                    leaders[i] += 1;
                }
            }
        }
    }

    let mut out = Vec::with_capacity(num_partitions as usize);
    for k in 0..num_partitions as usize {
        // Rotating tie-break: broker i's turn comes at partition i (mod n).
        let rot = |i: usize| (i + n - k % n) % n;
        let min_replicas = replicas.iter().copied().min().unwrap_or(0);
        let min_leaders = leaders.iter().copied().min().unwrap_or(0);
        let least_loaded: Vec<usize> = (0..n).filter(|&i| replicas[i] == min_replicas).collect();
        let mut candidates: Vec<usize> = if least_loaded.len() >= rf {
            least_loaded
                .iter()
                .copied()
                .filter(|&i| leaders[i] == min_leaders)
                .collect()
        } else {
            (0..n).filter(|&i| leaders[i] == min_leaders).collect()
        };
        if candidates.is_empty() {
            candidates = least_loaded;
        }
        let leader = candidates
            .into_iter()
            .min_by_key(|&i| (leaders[i], Reverse(replicas[i]), rot(i)))
            .expect("n >= rf >= 1, so some broker is a candidate");

        let mut chosen = vec![leader];
        let mut racks: BTreeSet<&str> = brokers[leader].1.into_iter().collect();
        while chosen.len() < rf {
            let next = (0..n)
                .filter(|i| !chosen.contains(i))
                .min_by_key(|&i| {
                    let rack_used = brokers[i].1.is_some_and(|r| racks.contains(r));
                    (rack_used, replicas[i], Reverse(leaders[i]), rot(i))
                })
                .expect("rf <= n, so an unchosen broker remains");
            racks.extend(brokers[next].1);
            chosen.push(next);
        }
        for &i in &chosen {
            replicas[i] += 1;
        }
        leaders[leader] += 1;
        out.push(chosen.into_iter().map(|i| brokers[i].0).collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::state::BrokerRegistration;

    fn cluster(racks: &[Option<String>], fenced: &[bool]) -> MetadataState {
        let mut s = MetadataState::default();
        for (i, rack) in racks.iter().enumerate() {
            let id = i as BrokerId * 10 + 1;
            s.brokers.insert(
                id,
                BrokerRegistration {
                    id,
                    incarnation_id: Uuid::from_u128(i as u128),
                    listeners: vec![],
                    rack: rack.clone(),
                    epoch: 1,
                    fenced: fenced.get(i).copied().unwrap_or(false),
                    last_heartbeat_ms: 0,
                },
            );
        }
        s
    }

    fn spread(counts: &BTreeMap<BrokerId, u64>) -> u64 {
        counts.values().max().copied().unwrap_or(0) - counts.values().min().copied().unwrap_or(0)
    }

    #[test]
    fn errors() {
        let s = cluster(&[None, None], &[]);
        assert_eq!(
            place(&s, 1, 0, &[]),
            Err(PlacementError::ZeroReplicationFactor)
        );
        assert_eq!(place(&s, 0, 1, &[]), Err(PlacementError::ZeroPartitions));
        assert_eq!(
            place(&s, 1, 3, &[]),
            Err(PlacementError::InsufficientBrokers {
                replication_factor: 3,
                available: 2
            })
        );
        let s = cluster(&[None, None, None], &[false, true, false]);
        assert!(matches!(
            place(&s, 1, 3, &[]),
            Err(PlacementError::InsufficientBrokers { .. })
        ));
    }

    #[test]
    fn existing_load_is_balanced_against() {
        let s = cluster(&[None, None, None], &[]);
        // Broker 1 already leads and holds everything: new partitions avoid it as leader.
        let existing = vec![vec![1], vec![1], vec![1]];
        let placed = place(&s, 2, 1, &existing).expect("place");
        assert_eq!(placed, vec![vec![11], vec![21]]);
    }

    proptest! {
        /// No racks: replica and leader counts per unfenced broker differ by at most one; no
        /// partition repeats a broker; fenced brokers get nothing.
        #[test]
        fn balanced_without_racks(
            fenced in proptest::collection::vec(any::<bool>(), 1..14),
            rf in 1u16..6,
            partitions in 1u32..80,
        ) {
            let s = cluster(&vec![None; fenced.len()], &fenced);
            let live: Vec<BrokerId> = s.unfenced_brokers().map(|b| b.id).collect();
            prop_assume!(!live.is_empty() && usize::from(rf) <= live.len());
            let placed = place(&s, partitions, rf, &[]).expect("placeable");
            prop_assert_eq!(placed.len(), partitions as usize);
            let mut reps: BTreeMap<BrokerId, u64> = live.iter().map(|b| (*b, 0)).collect();
            let mut leads = reps.clone();
            for set in &placed {
                prop_assert_eq!(set.len(), usize::from(rf));
                let distinct: BTreeSet<_> = set.iter().collect();
                prop_assert_eq!(distinct.len(), set.len(), "duplicate broker in {:?}", set);
                for b in set {
                    *reps.get_mut(b).expect("only unfenced brokers are used") += 1;
                }
                *leads.get_mut(&set[0]).expect("leader is unfenced") += 1;
            }
            prop_assert!(spread(&reps) <= 1, "replica counts {:?}", reps);
            prop_assert!(spread(&leads) <= 1, "leader counts {:?}", leads);
        }

        /// With racks: a partition's replicas are on distinct racks whenever enough racks exist.
        #[test]
        fn rack_aware(
            racks in proptest::collection::vec(0u8..4, 1..12),
            rf in 1u16..5,
            partitions in 1u32..40,
        ) {
            prop_assume!(usize::from(rf) <= racks.len());
            let names: Vec<Option<String>> = racks.iter().map(|r| Some(format!("rack-{r}"))).collect();
            let s = cluster(&names, &[]);
            let rack_of: BTreeMap<BrokerId, Option<String>> =
                s.brokers.values().map(|b| (b.id, b.rack.clone())).collect();
            let distinct_racks = racks.iter().collect::<BTreeSet<_>>().len();
            let placed = place(&s, partitions, rf, &[]).expect("placeable");
            for set in &placed {
                let used: BTreeSet<_> = set.iter().map(|b| &rack_of[b]).collect();
                prop_assert_eq!(used.len(), set.len().min(distinct_racks), "set {:?}", set);
                let distinct: BTreeSet<_> = set.iter().collect();
                prop_assert_eq!(distinct.len(), set.len());
            }
        }
    }
}
