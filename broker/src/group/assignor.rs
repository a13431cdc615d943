//! Server-side assignors of the KIP-848 consumer protocol: `uniform` (Kafka's default: every
//! partition of every subscribed topic spread evenly over the members, keeping each member's previous
//! partitions where the quota allows) and `range` (per topic, contiguous ranges over the subscribed
//! members in member id order, Kafka's classic range layout). Both are pure functions.

use std::collections::{BTreeMap, BTreeSet};

/// Partitions by topic name.
pub type TopicPartitions = BTreeMap<String, BTreeSet<i32>>;

/// Name of the default assignor.
pub const UNIFORM: &str = "uniform";
/// Name of the range assignor.
pub const RANGE: &str = "range";

/// What an assignor sees of one member.
#[derive(Debug, Clone, Default)]
pub struct AssignorMember {
    /// Subscribed topic names.
    pub subscribed: BTreeSet<String>,
    /// The member's previous target assignment (for stickiness).
    pub previous: TopicPartitions,
}

/// Whether `name` is a server-side assignor this broker implements.
pub fn is_supported(name: &str) -> bool {
    name == UNIFORM || name == RANGE
}

/// Computes the target assignment of every member with the assignor `name` (`uniform` when
/// unknown). `topics` maps each existing subscribed topic to its partition count.
pub fn assign(
    name: &str,
    members: &BTreeMap<String, AssignorMember>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    if name == RANGE {
        range(members, topics)
    } else {
        uniform(members, topics)
    }
}

fn range(
    members: &BTreeMap<String, AssignorMember>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> = members
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for (topic, &count) in topics {
        let subs: Vec<&String> = members
            .iter()
            .filter(|(_, m)| m.subscribed.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subs.is_empty() || count <= 0 {
            continue;
        }
        let n = i32::try_from(subs.len()).unwrap_or(i32::MAX);
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, id) in subs.into_iter().enumerate() {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            let len = per + i32::from(i < extra);
            if len > 0 {
                out.get_mut(id)
                    .expect("member listed")
                    .insert(topic.clone(), (next..next + len).collect());
            }
            next += len;
        }
    }
    out
}

fn uniform(
    members: &BTreeMap<String, AssignorMember>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> = members
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    let all: Vec<(String, i32)> = topics
        .iter()
        .filter(|(t, _)| members.values().any(|m| m.subscribed.contains(*t)))
        .flat_map(|(t, &n)| (0..n.max(0)).map(move |p| (t.clone(), p)))
        .collect();
    if members.is_empty() || all.is_empty() {
        return out;
    }
    let n = members.len();
    let min_quota = all.len() / n;
    let mut extra = all.len() % n;
    let mut count: BTreeMap<&String, usize> = members.keys().map(|m| (m, 0)).collect();
    let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
    // Stickiness: keep previous partitions up to the quota; a member that had more than the minimum
    // keeps one extra while extra slots remain.
    for (id, m) in members {
        let kept: Vec<(String, i32)> = m
            .previous
            .iter()
            .filter(|(t, _)| m.subscribed.contains(*t) && topics.contains_key(*t))
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .filter(|(t, p)| *p < topics[t] && !taken.contains(&(t.clone(), *p)))
            .collect();
        let mut quota = min_quota;
        if kept.len() > min_quota && extra > 0 {
            quota += 1;
            extra -= 1;
        }
        for tp in kept.into_iter().take(quota) {
            out.get_mut(id)
                .expect("member listed")
                .entry(tp.0.clone())
                .or_default()
                .insert(tp.1);
            taken.insert(tp);
            *count.get_mut(id).expect("member listed") += 1;
        }
    }
    // Fill: each free partition goes to the subscribed member with the fewest partitions.
    for (t, p) in all {
        if taken.contains(&(t.clone(), p)) {
            continue;
        }
        let best = members
            .iter()
            .filter(|(_, m)| m.subscribed.contains(&t))
            .map(|(id, _)| id)
            .min_by_key(|id| count[id]);
        let Some(id) = best else { continue };
        out.get_mut(id)
            .expect("member listed")
            .entry(t.clone())
            .or_default()
            .insert(p);
        *count.get_mut(id).expect("member listed") += 1;
        taken.insert((t, p));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str], topics: &[&str]) -> BTreeMap<String, AssignorMember> {
        ids.iter()
            .map(|id| {
                (
                    id.to_string(),
                    AssignorMember {
                        subscribed: topics.iter().map(|t| t.to_string()).collect(),
                        previous: BTreeMap::new(),
                    },
                )
            })
            .collect()
    }

    fn sizes(a: &BTreeMap<String, TopicPartitions>) -> Vec<usize> {
        a.values()
            .map(|tp| tp.values().map(BTreeSet::len).sum())
            .collect()
    }

    fn flat(tp: &TopicPartitions) -> BTreeSet<(String, i32)> {
        tp.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    }

    #[test]
    fn uniform_spreads_evenly_and_covers_every_partition() {
        let topics = BTreeMap::from([("a".to_string(), 6), ("b".to_string(), 1)]);
        let m = members(&["m1", "m2", "m3"], &["a", "b"]);
        let out = assign(UNIFORM, &m, &topics);
        let mut s = sizes(&out);
        s.sort_unstable();
        assert_eq!(s, vec![2, 2, 3]);
        let all: BTreeSet<_> = out.values().flat_map(flat).collect();
        assert_eq!(all.len(), 7);
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins_or_leaves() {
        let topics = BTreeMap::from([("a".to_string(), 6)]);
        let mut m = members(&["m1", "m2"], &["a"]);
        let first = assign(UNIFORM, &m, &topics);
        assert_eq!(sizes(&first), vec![3, 3]);
        for (id, tp) in &first {
            m.get_mut(id).expect("member").previous = tp.clone();
        }
        m.insert(
            "m3".into(),
            AssignorMember {
                subscribed: BTreeSet::from(["a".to_string()]),
                previous: BTreeMap::new(),
            },
        );
        let second = assign(UNIFORM, &m, &topics);
        assert_eq!(sizes(&second), vec![2, 2, 2]);
        for id in ["m1", "m2"] {
            let kept = flat(&second[id]);
            assert!(
                kept.is_subset(&flat(&first[id])),
                "{id} only loses partitions"
            );
        }
        // m1 leaves: m2 and m3 keep theirs and split m1's.
        let mut m2 = m.clone();
        m2.remove("m1");
        for (id, tp) in &second {
            if let Some(x) = m2.get_mut(id) {
                x.previous = tp.clone();
            }
        }
        let third = assign(UNIFORM, &m2, &topics);
        assert_eq!(sizes(&third), vec![3, 3]);
        for id in ["m2", "m3"] {
            assert!(flat(&second[id]).is_subset(&flat(&third[id])));
        }
    }

    #[test]
    fn range_matches_kafkas_layout() {
        let topics = BTreeMap::from([("a".to_string(), 7), ("b".to_string(), 2)]);
        let m = members(&["m1", "m2", "m3"], &["a", "b"]);
        let out = assign(RANGE, &m, &topics);
        assert_eq!(out["m1"]["a"], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["m2"]["a"], BTreeSet::from([3, 4]));
        assert_eq!(out["m3"]["a"], BTreeSet::from([5, 6]));
        assert_eq!(out["m1"]["b"], BTreeSet::from([0]));
        assert_eq!(out["m2"]["b"], BTreeSet::from([1]));
        assert!(!out["m3"].contains_key("b"));
    }

    #[test]
    fn only_subscribed_topics_are_assigned() {
        let topics = BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]);
        let mut m = members(&["m1", "m2"], &["a"]);
        m.get_mut("m2").expect("m2").subscribed = BTreeSet::from(["b".to_string()]);
        let out = assign(UNIFORM, &m, &topics);
        assert_eq!(out["m1"].keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(out["m2"].keys().collect::<Vec<_>>(), vec!["b"]);
    }
}
