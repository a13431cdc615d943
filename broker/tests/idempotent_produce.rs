//! Idempotent produce at the wire level: InitProducerId, then record batches carrying (producer id,
//! epoch, base sequence) sent over raw TCP. A retried batch is answered with its original offsets and
//! written once, also after a clean restart and after kill -9; a sequence gap is refused.

mod common;

use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use common::{roundtrip, TestBroker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, InitProducerIdRequest, ListOffsetsRequest, ProduceRequest,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const TOPIC: &str = "idempotent";
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

fn create_topic(stream: &mut TcpStream) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let response = roundtrip(stream, &request, 4, 1).expect("CreateTopics v4");
    assert_eq!(response.topics[0].error_code, 0, "CreateTopics");
}

fn init_producer_id(stream: &mut TcpStream) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = roundtrip(stream, &request, 4, 2).expect("InitProducerId v4");
    assert_eq!(response.error_code, 0, "InitProducerId");
    assert!(
        response.producer_id.0 >= 0,
        "producer id {:?}",
        response.producer_id
    );
    assert!(response.producer_epoch >= 0);
    (response.producer_id.0, response.producer_epoch)
}

/// A batch of `n` records from producer (`pid`, `epoch`) starting at `base_sequence`.
fn batch(pid: i64, epoch: i16, base_sequence: i32, n: i32) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence + i,
            timestamp: 1_700_000_000_000 + (base_sequence + i) as i64,
            key: None,
            value: Some(Bytes::from(format!("seq-{}", base_sequence + i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        },
    )
    .expect("encode an idempotent batch");
    buf.freeze()
}

/// Produce v9 acks=all of one batch; returns (error code, base offset).
fn produce(stream: &mut TcpStream, batch: Bytes, correlation_id: i32) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let response = roundtrip(stream, &request, 9, correlation_id).expect("Produce v9");
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn log_end_offset(stream: &mut TcpStream) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let response = roundtrip(stream, &request, 7, 3).expect("ListOffsets v7");
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "ListOffsets latest");
    p.offset
}

#[test]
fn retried_batches_are_written_once_across_restarts() {
    let mut broker = TestBroker::start();
    let mut stream = broker.connect();
    create_topic(&mut stream);
    let (pid, epoch) = init_producer_id(&mut stream);

    let first = batch(pid, epoch, 0, 3);
    assert_eq!(produce(&mut stream, first.clone(), 10), (0, 0));
    // The same batch again (a retry after a lost response): original offset, nothing appended.
    assert_eq!(
        produce(&mut stream, first.clone(), 11),
        (0, 0),
        "retry of seq 0..2"
    );
    assert_eq!(
        log_end_offset(&mut stream),
        3,
        "a duplicate batch was appended"
    );

    let second = batch(pid, epoch, 3, 2);
    assert_eq!(produce(&mut stream, second.clone(), 12), (0, 3));

    // A gap in the sequence is refused and writes nothing.
    let (code, _) = produce(&mut stream, batch(pid, epoch, 10, 1), 13);
    assert_eq!(code, OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence gap 5 -> 10");
    assert_eq!(log_end_offset(&mut stream), 5);

    // Producer state survives a clean restart...
    drop(stream);
    broker.restart();
    let mut stream = broker.connect();
    assert_eq!(
        produce(&mut stream, second.clone(), 14),
        (0, 3),
        "retry after SIGTERM + restart"
    );
    assert_eq!(log_end_offset(&mut stream), 5);
    let third = batch(pid, epoch, 5, 4);
    assert_eq!(produce(&mut stream, third.clone(), 15), (0, 5));

    // ...and a crash (acks=all answers only after fsync, so the batch is on disk).
    drop(stream);
    broker.kill9_and_restart();
    let mut stream = broker.connect();
    assert_eq!(
        produce(&mut stream, third, 16),
        (0, 5),
        "retry after kill -9 + restart"
    );
    assert_eq!(log_end_offset(&mut stream), 9);
    assert_eq!(produce(&mut stream, batch(pid, epoch, 9, 1), 17), (0, 9));
    assert_eq!(log_end_offset(&mut stream), 10);
}
