//! DescribeQuorum over the Kafka protocol against three real `strata broker` processes in combined
//! mode (each embeds a voter): every broker answers with the same leader and all three voters, the
//! followers' log ends reach the commit index, and after kill -9 of the leader's process a survivor
//! reports a new leader in a higher term. A single node answers for its one-voter quorum.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, roundtrip, TestBroker};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

fn describe_quorum(broker: &TestBroker, version: i16) -> DescribeQuorumResponse {
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(StrBytes::from_static_str("__cluster_metadata"));
    topic.partitions = vec![partition];
    let mut request = DescribeQuorumRequest::default();
    request.topics = vec![topic];
    let mut stream = broker.connect();
    roundtrip(&mut stream, &request, version, 7).expect("DescribeQuorum round trip")
}

/// (leader, term, high watermark, [(voter, log end offset)]) of a successful answer.
fn summary(resp: &DescribeQuorumResponse) -> (i32, i32, i64, Vec<(i32, i64)>) {
    assert_eq!(resp.topics.len(), 1);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{:?}", p.error_message);
    let voters = p
        .current_voters
        .iter()
        .map(|v| (v.replica_id.0, v.log_end_offset))
        .collect();
    (p.leader_id.0, p.leader_epoch, p.high_watermark, voters)
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn single_node_reports_its_one_voter_quorum() {
    let broker = TestBroker::start();
    let (leader, term, hw, voters) = summary(&describe_quorum(&broker, 1));
    assert_eq!(leader, 0);
    assert!(term >= 1);
    assert!(hw >= 1, "registration and cluster init are committed");
    assert_eq!(voters.len(), 1);
    assert_eq!(voters[0].0, 0);
    assert!(
        voters[0].1 > hw,
        "the leader's log end is past the commit index"
    );
    // An unknown partition is an error for that partition only.
    let mut request = DescribeQuorumRequest::default();
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(StrBytes::from_static_str("not-the-metadata-log"));
    topic.partitions = vec![PartitionData::default()];
    request.topics = vec![topic];
    let resp: DescribeQuorumResponse =
        roundtrip(&mut broker.connect(), &request, 0, 8).expect("round trip");
    assert_eq!(resp.topics[0].partitions[0].error_code, 3);
}

#[test]
fn three_brokers_report_one_quorum_and_its_failover() {
    let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = (1..=3)
        .zip(&controller_ports)
        .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    // Each broker opens its Kafka port only once a quorum exists: start them concurrently.
    let handles: Vec<_> = (1..=3)
        .zip(controller_ports.clone())
        .map(|(id, port)| {
            let voters = voters.clone();
            std::thread::spawn(move || {
                let id = id.to_string();
                let listen = format!("127.0.0.1:{port}");
                TestBroker::start_with(&[
                    "--node-id",
                    &id,
                    "--controller-voters",
                    &voters,
                    "--controller-listen",
                    &listen,
                    "--broker-session-timeout-ms",
                    "3000",
                    "--broker-heartbeat-interval-ms",
                    "500",
                ])
            })
        })
        .collect();
    let mut brokers: Vec<TestBroker> = handles
        .into_iter()
        .map(|h| h.join().expect("broker start"))
        .collect();

    let (leader, term, _, _) = eventually("all voters caught up", || {
        let answers: Vec<_> = brokers
            .iter()
            .map(|b| summary(&describe_quorum(b, 2)))
            .collect();
        let (leader, term, hw, voters) = answers[0].clone();
        let agree = answers.iter().all(|a| a.0 == leader && a.1 == term);
        let caught_up = voters.len() == 3 && voters.iter().all(|(_, end)| *end >= hw);
        (agree && caught_up).then_some((leader, term, hw, voters))
    });
    assert!((1..=3).contains(&leader));
    let v2 = describe_quorum(&brokers[0], 2);
    assert_eq!(
        v2.nodes.len(),
        3,
        "v2 lists the voters' controller endpoints"
    );
    let ports: Vec<u16> = v2.nodes.iter().map(|n| n.listeners[0].port).collect();
    for p in &controller_ports {
        assert!(ports.contains(p), "{ports:?} lacks {p}");
    }

    // kill -9 the process of the leader: a survivor reports another leader in a later term.
    let index = usize::try_from(leader - 1).expect("node ids are 1..=3");
    brokers[index].kill9();
    let survivor = &brokers[(index + 1) % 3];
    let (new_leader, new_term) = eventually("a new leader", || {
        let resp = describe_quorum(survivor, 1);
        let p = &resp.topics[0].partitions[0];
        (p.error_code == 0 && p.leader_id.0 != leader).then_some((p.leader_id.0, p.leader_epoch))
    });
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "term {new_term} after {term}");
}
