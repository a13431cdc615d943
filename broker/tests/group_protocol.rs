//! Group coordinator APIs on the wire, against the real broker binary: every advertised version of every
//! group API encodes and decodes, the KIP-394 member id round trip, generation and membership checks,
//! batched FindCoordinator/LeaveGroup/OffsetFetch, and committed offsets surviving kill -9.

mod common;

use std::net::TcpStream;

use bytes::Bytes;
use common::{roundtrip, TestBroker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "grouped";
const MEMBER_ID_REQUIRED: i16 = 79;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn create_topic(stream: &mut TcpStream) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_num_partitions(2)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let response = roundtrip(stream, &request, 4, 1).expect("CreateTopics v4");
    assert_eq!(response.topics[0].error_code, 0, "CreateTopics");
}

fn join(group: &str, member: &str, version: i16) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(
                b"\x00\x00\x00\x00\x00\x01\x00\x07grouped\xff\xff\xff\xff",
            ))]);
    if version >= 1 {
        r.rebalance_timeout_ms = 10_000;
    }
    r
}

fn commit(group: &str, member: &str, generation: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(s("meta")))])])
}

fn fetch_v8(groups: &[&str]) -> OffsetFetchRequest {
    OffsetFetchRequest::default().with_groups(
        groups
            .iter()
            .map(|g| {
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(g)))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partition_indexes(vec![0, 1])]))
            })
            .collect(),
    )
}

/// (committed offset of partition 0, of partition 1) per group, via OffsetFetch v8.
fn fetched(stream: &mut TcpStream, groups: &[&str], cid: i32) -> Vec<(i64, i64)> {
    let r = roundtrip(stream, &fetch_v8(groups), 8, cid).expect("OffsetFetch v8");
    r.groups
        .iter()
        .map(|g| {
            let p = &g.topics[0].partitions;
            (p[0].committed_offset, p[1].committed_offset)
        })
        .collect()
}

#[test]
fn member_lifecycle_commits_and_restart() {
    let mut broker = TestBroker::start_with(&[
        "--group-initial-rebalance-delay-ms",
        "0",
        "--offsets-topic-num-partitions",
        "3",
    ]);
    let mut st = broker.connect();
    create_topic(&mut st);

    // FindCoordinator: batched keys (v4) and the transaction key type.
    let fc = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![s("g1"), s("g2")]);
    let r = roundtrip(&mut st, &fc, 4, 2).expect("FindCoordinator v4");
    assert_eq!(r.coordinators.len(), 2);
    assert!(r
        .coordinators
        .iter()
        .all(|c| c.error_code == 0 && c.port == broker.port as i32));
    let txn = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![s("tx")]);
    let r = roundtrip(&mut st, &txn, 4, 3).expect("FindCoordinator v4 txn");
    assert_eq!(r.coordinators[0].error_code, COORDINATOR_NOT_AVAILABLE);

    // KIP-394: the first join gets MEMBER_ID_REQUIRED and an id.
    let r = roundtrip(&mut st, &join("g1", "", 5), 5, 4).expect("JoinGroup v5");
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
    let member = r.member_id.to_string();
    assert!(!member.is_empty());
    let r = roundtrip(&mut st, &join("g1", &member, 5), 5, 5).expect("JoinGroup v5");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader.as_str(), member);
    assert_eq!(r.members.len(), 1);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g1")))
        .with_generation_id(1)
        .with_member_id(s(&member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&member))
            .with_assignment(Bytes::from_static(b"assignment"))]);
    let r = roundtrip(&mut st, &sync, 3, 6).expect("SyncGroup v3");
    assert_eq!(r.error_code, 0);
    assert_eq!(&r.assignment[..], b"assignment");

    let hb = |generation: i32| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(s("g1")))
            .with_generation_id(generation)
            .with_member_id(s(&member))
    };
    assert_eq!(roundtrip(&mut st, &hb(1), 3, 7).expect("hb").error_code, 0);
    assert_eq!(
        roundtrip(&mut st, &hb(0), 3, 8).expect("hb").error_code,
        ILLEGAL_GENERATION
    );

    // Commits: the member's generation is checked; a simple commit is refused while it is a member.
    let r = roundtrip(&mut st, &commit("g1", &member, 1, 7), 8, 9).expect("OffsetCommit v8");
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r = roundtrip(&mut st, &commit("g1", &member, 2, 8), 8, 10).expect("OffsetCommit v8");
    assert_eq!(r.topics[0].partitions[0].error_code, ILLEGAL_GENERATION);
    let r = roundtrip(&mut st, &commit("g1", "", -1, 9), 8, 11).expect("OffsetCommit v8");
    assert_eq!(r.topics[0].partitions[0].error_code, UNKNOWN_MEMBER_ID);

    // Batched LeaveGroup empties the group; then simple commits are accepted.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g1")))
        .with_members(vec![
            MemberIdentity::default().with_member_id(s(&member)),
            MemberIdentity::default().with_member_id(s("ghost")),
        ]);
    let r = roundtrip(&mut st, &leave, 3, 12).expect("LeaveGroup v3");
    assert_eq!(r.members[0].error_code, 0);
    assert_eq!(r.members[1].error_code, UNKNOWN_MEMBER_ID);
    let unknown = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("no-such-group")))
        .with_members(vec![MemberIdentity::default().with_member_id(s("m"))]);
    let r = roundtrip(&mut st, &unknown, 3, 30).expect("LeaveGroup v3");
    assert_eq!(
        (r.error_code, r.members[0].error_code),
        (0, UNKNOWN_MEMBER_ID)
    );
    let r = roundtrip(&mut st, &commit("g2", "", -1, 3), 2, 13).expect("OffsetCommit v2");
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    let list = ListGroupsRequest::default().with_states_filter(vec![s("Empty")]);
    let r = roundtrip(&mut st, &list, 4, 14).expect("ListGroups v4");
    let mut names: Vec<String> = r.groups.iter().map(|g| g.group_id.to_string()).collect();
    names.sort();
    assert_eq!(names, ["g1", "g2"]);

    assert_eq!(
        fetched(&mut st, &["g1", "g2", "none"], 15),
        [(7, -1), (3, -1), (-1, -1)]
    );
    drop(st);

    broker.kill9_and_restart();
    let mut st = broker.connect();
    assert_eq!(fetched(&mut st, &["g1", "g2"], 16), [(7, -1), (3, -1)]);
    // The offsets topic has the configured partition count.
    let md = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(s("__consumer_offsets"))))]));
    let r = roundtrip(&mut st, &md, 4, 17).expect("Metadata v4");
    assert_eq!(r.topics[0].partitions.len(), 3);
    assert!(r.topics[0].is_internal);
}

#[test]
fn every_advertised_group_api_version_round_trips() {
    let broker = TestBroker::start_with(&["--group-initial-rebalance-delay-ms", "0"]);
    let mut st = broker.connect();
    create_topic(&mut st);
    let mut cid = 100;
    let mut next = || {
        cid += 1;
        cid
    };
    for v in 0..=6 {
        let mut r = FindCoordinatorRequest::default();
        if v >= 4 {
            r.coordinator_keys = vec![s("g")];
        } else {
            r.key = s("g");
        }
        roundtrip(&mut st, &r, v, next()).unwrap_or_else(|e| panic!("FindCoordinator v{v}: {e}"));
    }
    for v in 0..=9i16 {
        let group = format!("gv{v}");
        let first = roundtrip(&mut st, &join(&group, "", v), v, next())
            .unwrap_or_else(|e| panic!("JoinGroup v{v}: {e}"));
        let member = if v >= 4 {
            assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "v{v}");
            let r = roundtrip(&mut st, &join(&group, &first.member_id, v), v, next())
                .unwrap_or_else(|e| panic!("JoinGroup v{v}: {e}"));
            assert_eq!(r.error_code, 0, "JoinGroup v{v}");
            r.member_id.to_string()
        } else {
            assert_eq!(first.error_code, 0, "JoinGroup v{v}");
            first.member_id.to_string()
        };
        let sv = v.min(5);
        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(1)
            .with_member_id(s(&member));
        if sv >= 5 {
            sync.protocol_type = Some(s("consumer"));
            sync.protocol_name = Some(s("range"));
        }
        let r = roundtrip(&mut st, &sync, sv, next())
            .unwrap_or_else(|e| panic!("SyncGroup v{sv}: {e}"));
        assert_eq!(r.error_code, 0, "SyncGroup v{sv}");
        let hv = v.min(4);
        let hb = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(1)
            .with_member_id(s(&member));
        let r =
            roundtrip(&mut st, &hb, hv, next()).unwrap_or_else(|e| panic!("Heartbeat v{hv}: {e}"));
        assert_eq!(r.error_code, 0, "Heartbeat v{hv}");
        if (2..=9).contains(&v) {
            let r = roundtrip(&mut st, &commit(&group, &member, 1, 5), v, next())
                .unwrap_or_else(|e| panic!("OffsetCommit v{v}: {e}"));
            assert_eq!(r.topics[0].partitions[0].error_code, 0, "OffsetCommit v{v}");
        }
        let dv = v.min(5);
        let d = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(&group))]);
        let r = roundtrip(&mut st, &d, dv, next())
            .unwrap_or_else(|e| panic!("DescribeGroups v{dv}: {e}"));
        assert_eq!(
            r.groups[0].group_state.as_str(),
            "Stable",
            "DescribeGroups v{dv}"
        );
        assert_eq!(r.groups[0].members.len(), 1);
        let lv = v.min(5);
        let mut leave = LeaveGroupRequest::default().with_group_id(GroupId(s(&group)));
        if lv >= 3 {
            leave.members = vec![MemberIdentity::default().with_member_id(s(&member))];
        } else {
            leave.member_id = s(&member);
        }
        let r = roundtrip(&mut st, &leave, lv, next())
            .unwrap_or_else(|e| panic!("LeaveGroup v{lv}: {e}"));
        assert_eq!(r.error_code, 0, "LeaveGroup v{lv}");
    }
    for v in 1..=9 {
        let r = if v >= 8 {
            fetch_v8(&["gv5"])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s("gv5")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partition_indexes(vec![0])]))
        };
        let resp =
            roundtrip(&mut st, &r, v, next()).unwrap_or_else(|e| panic!("OffsetFetch v{v}: {e}"));
        let offset = if v >= 8 {
            resp.groups[0].topics[0].partitions[0].committed_offset
        } else {
            resp.topics[0].partitions[0].committed_offset
        };
        assert_eq!(offset, 5, "OffsetFetch v{v}");
    }
    for v in 0..=5 {
        let r = roundtrip(&mut st, &ListGroupsRequest::default(), v, next())
            .unwrap_or_else(|e| panic!("ListGroups v{v}: {e}"));
        assert!(r.groups.len() >= 10, "ListGroups v{v}");
    }
    let od = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s("gv2")))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let r = roundtrip(&mut st, &od, 0, next()).expect("OffsetDelete v0");
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    for v in 0..=2 {
        let d =
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&format!("gv{v}")))]);
        let r =
            roundtrip(&mut st, &d, v, next()).unwrap_or_else(|e| panic!("DeleteGroups v{v}: {e}"));
        assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{v}");
    }
}
