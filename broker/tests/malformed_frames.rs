//! Hostile frames over raw TCP, each on its own connection. After each one the broker must still answer a
//! proper ApiVersions request on a new connection, and at the end a normal produce and fetch must work.
//!
//! Well-formed parts are built with `kafka_protocol`'s encoders; only the deliberately broken bytes are
//! written by hand.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{assert_api_versions_ok, encode_frame, read_reply, roundtrip, Reply, TestBroker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, FetchRequest,
    MetadataRequest, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// The broker under test refuses frames above this size.
const MAX_REQUEST_BYTES: i32 = 1 << 20;
const TOPIC: &str = "hostile";
/// Kafka error codes the cases expect.
const CORRUPT_MESSAGE: i16 = 2;
const UNSUPPORTED_VERSION: i16 = 35;

/// What the broker must do with a hostile frame.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Close the connection without answering.
    Close,
    /// Either close, or answer with this correlation id (an error response); never hang.
    CloseOrAnswer(i32),
}

fn start() -> TestBroker {
    TestBroker::start_with(&[
        "--socket-request-max-bytes",
        &MAX_REQUEST_BYTES.to_string(),
        "--auto-create-topics-enable",
        "false",
    ])
}

fn connect_short(broker: &TestBroker) -> TcpStream {
    let stream = broker.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");
    stream
}

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// Sends `bytes` on a fresh connection (optionally half-closing it), checks the broker's reaction, then
/// checks that the broker is alive and still answers ApiVersions on another connection.
fn hostile(broker: &mut TestBroker, name: &str, bytes: &[u8], half_close: bool, expect: Expect) {
    let mut stream = connect_short(broker);
    // The broker may close the connection before it has read everything; a failed write is fine.
    let _ = stream.write_all(bytes);
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let reply = read_reply(&mut stream);
    match (expect, &reply) {
        (_, Reply::Closed) => {}
        (Expect::CloseOrAnswer(correlation_id), Reply::Frame(frame)) => {
            let got = i32::from_be_bytes(
                frame
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or_else(|| panic!("{name}: response frame shorter than a header")),
            );
            assert_eq!(
                got, correlation_id,
                "{name}: response carries another correlation id"
            );
        }
        (_, Reply::Silent) => panic!(
            "{name}: broker neither answered nor closed the connection within 5s\n{}",
            broker.log_tail(30)
        ),
        (Expect::Close, Reply::Frame(frame)) => panic!(
            "{name}: expected the broker to close the connection, got a {}-byte response",
            frame.len()
        ),
    }
    assert_api_versions_ok(broker, name);
}

#[test]
fn truncated_header_then_eof() {
    let mut broker = start();
    // Frame announces 10 bytes, only the api key arrives, then the client half-closes.
    let mut bytes = 10i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&(ApiKey::Metadata as i16).to_be_bytes());
    hostile(
        &mut broker,
        "truncated header + EOF",
        &bytes,
        true,
        Expect::Close,
    );
}

#[test]
fn complete_frame_too_short_for_a_header() {
    let mut broker = start();
    let payload = (ApiKey::Metadata as i16).to_be_bytes();
    hostile(
        &mut broker,
        "2-byte frame",
        &frame_of(&payload),
        false,
        Expect::Close,
    );
    // api key + version + half a correlation id
    let payload = [0u8, 3, 0, 1, 0, 0];
    hostile(
        &mut broker,
        "6-byte frame",
        &frame_of(&payload),
        false,
        Expect::Close,
    );
}

#[test]
fn zero_length_frame() {
    let mut broker = start();
    hostile(
        &mut broker,
        "zero-length frame",
        &0i32.to_be_bytes(),
        false,
        Expect::Close,
    );
}

#[test]
fn negative_length() {
    let mut broker = start();
    hostile(
        &mut broker,
        "length -1",
        &(-1i32).to_be_bytes(),
        false,
        Expect::Close,
    );
    hostile(
        &mut broker,
        "length i32::MIN",
        &i32::MIN.to_be_bytes(),
        false,
        Expect::Close,
    );
}

#[test]
fn oversized_length_is_refused_without_allocating() {
    let mut broker = start();
    let peak_before = broker.proc_status_kib("VmPeak");
    // No body follows: a broker that waits for 2 GiB (or allocates it) fails this case.
    hostile(
        &mut broker,
        "length 0x7fffffff",
        &i32::MAX.to_be_bytes(),
        false,
        Expect::Close,
    );
    hostile(
        &mut broker,
        "length max+1",
        &(MAX_REQUEST_BYTES + 1).to_be_bytes(),
        false,
        Expect::Close,
    );
    let peak_after = broker.proc_status_kib("VmPeak");
    // A 2 GiB buffer would show in the peak; new allocator arenas (64 MiB each) stay well below 1 GiB.
    if let (Some(before), Some(after)) = (peak_before, peak_after) {
        assert!(
            after.saturating_sub(before) < 1024 * 1024,
            "broker's peak virtual memory grew from {before} KiB to {after} KiB on an oversized frame"
        );
    }
}

#[test]
fn unknown_api_key() {
    let mut broker = start();
    for (api_key, correlation_id) in [(9999i16, 7), (-1, 8)] {
        let header = RequestHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(0)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-it")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, 1)
            .expect("encode a v1 request header");
        hostile(
            &mut broker,
            &format!("api key {api_key}"),
            &frame_of(&payload),
            false,
            Expect::CloseOrAnswer(correlation_id),
        );
    }
}

#[test]
fn unsupported_api_versions_version_gets_v0_error_response() {
    let mut broker = start();
    let mut stream = broker.connect();
    // A client newer than the broker: ApiVersions v127 (flexible header), body as the client would send.
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(127)
        .with_correlation_id(99)
        .with_client_id(Some(StrBytes::from_static_str("strata-it")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, 2)
        .expect("encode a v2 request header");
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("future-client"))
        .with_client_software_version(StrBytes::from_static_str("99.0"))
        .encode(&mut payload, 3)
        .expect("encode ApiVersions v3 body");
    stream
        .write_all(&frame_of(&payload))
        .expect("send ApiVersions v127");
    let mut frame = match read_reply(&mut stream) {
        Reply::Frame(frame) => frame,
        other => panic!("ApiVersions v127: expected a v0 error response (KIP-511), got {other:?}"),
    };
    let header = ResponseHeader::decode(&mut frame, 0).expect("response header v0");
    assert_eq!(header.correlation_id, 99);
    let response = ApiVersionsResponse::decode(&mut frame, 0)
        .expect("ApiVersions v127 must be answered in the v0 format");
    assert_eq!(
        response.error_code, UNSUPPORTED_VERSION,
        "ApiVersions v127 error code"
    );
    let api_versions = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .expect("the v0 error response lists the supported versions of ApiVersions");
    assert!(
        api_versions.min_version == 0 && api_versions.max_version >= 3,
        "ApiVersions range {}..{}",
        api_versions.min_version,
        api_versions.max_version
    );
    assert!(
        response.api_keys.iter().any(|k| k.api_key == 0),
        "Produce missing from the api list"
    );
    assert!(frame.is_empty(), "{} trailing bytes", frame.len());
    assert_api_versions_ok(&mut broker, "ApiVersions v127");
}

#[test]
fn produce_with_huge_array_count() {
    let mut broker = start();
    let empty = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![]);

    // v7 (classic encoding): the body ends with the int32 count of topic_data.
    let mut frame = encode_frame(&empty, 7, 11).expect("encode Produce v7");
    let n = frame.len();
    assert_eq!(
        &frame[n - 4..],
        &[0, 0, 0, 0],
        "topic_data count at the end"
    );
    frame[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3]);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    hostile(
        &mut broker,
        "Produce v7 with 2^31-1 topics in 3 bytes",
        &frame,
        false,
        Expect::CloseOrAnswer(11),
    );

    // v9 (flexible): compact array length varint(N+1) then the tagged-field count.
    let mut frame = encode_frame(&empty, 9, 12).expect("encode Produce v9");
    let n = frame.len();
    assert_eq!(
        &frame[n - 2..],
        &[1, 0],
        "compact topic_data length and tag count at the end"
    );
    frame.truncate(n - 2);
    frame.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]); // varint 2^31 = count 2^31-1
    frame.extend_from_slice(&[1, 2, 3]);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    hostile(
        &mut broker,
        "Produce v9 with 2^31-1 topics in 3 bytes",
        &frame,
        false,
        Expect::CloseOrAnswer(12),
    );
}

/// Deterministic garbage (xorshift64); the seed is printed so a failure can be replayed.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    println!("garbage seed {seed}");
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn garbage_after_valid_header() {
    let mut broker = start();
    let seed = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2024_u64);
    for (i, (api_key, version)) in [
        (ApiKey::CreateTopics, 4i16),
        (ApiKey::Metadata, 9),
        (ApiKey::Produce, 9),
        (ApiKey::Fetch, 11),
        (ApiKey::ListOffsets, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let correlation_id = 100 + i as i32;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-it")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, api_key.request_header_version(version))
            .expect("encode request header");
        payload.extend_from_slice(&garbage(seed.wrapping_add(i as u64), 48));
        hostile(
            &mut broker,
            &format!("{api_key:?} v{version} header + 48 bytes of garbage"),
            &frame_of(&payload),
            false,
            Expect::CloseOrAnswer(correlation_id),
        );
    }
}

#[test]
fn truncated_body() {
    let mut broker = start();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("never-created")))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let frame = encode_frame(&request, 4, 21).expect("encode CreateTopics v4");
    let cut = &frame[4..frame.len() - 3];
    hostile(
        &mut broker,
        "CreateTopics v4 missing its last 3 bytes",
        &frame_of(cut),
        false,
        Expect::CloseOrAnswer(21),
    );
    let mut stream = broker.connect();
    let metadata = roundtrip(
        &mut stream,
        &MetadataRequest::default().with_topics(None),
        9,
        22,
    )
    .expect("metadata");
    assert!(
        metadata.topics.iter().all(|t| t
            .name
            .as_ref()
            .map(|n| n.0.as_str() != "never-created")
            .unwrap_or(true)),
        "a truncated CreateTopics created the topic"
    );
}

fn create_topic(stream: &mut TcpStream, name: &'static str) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let response = roundtrip(stream, &request, 4, 1).expect("CreateTopics v4");
    assert_eq!(response.topics.len(), 1);
    assert_eq!(response.topics[0].error_code, 0, "CreateTopics {name}");
}

fn records(tag: &str) -> Vec<Record> {
    (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("{tag}-value-{i}"))),
            headers: Default::default(),
        })
        .collect()
}

fn batch(tag: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records(tag),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode a record batch");
    buf
}

fn produce(topic: &'static str, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])])
}

fn produce_partition_result(response: &ProduceResponse) -> (i16, i64) {
    assert_eq!(response.responses.len(), 1);
    assert_eq!(response.responses[0].partition_responses.len(), 1);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn bad_crc_is_corrupt_message_and_normal_traffic_still_works() {
    let mut broker = start();
    let mut stream = broker.connect();
    create_topic(&mut stream, TOPIC);

    let mut bad = batch("bad");
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // inside the last record's value: covered by the CRC
    let response = roundtrip(&mut stream, &produce(TOPIC, bad.freeze()), 7, 2)
        .expect("a batch with a bad CRC must get a Produce response");
    assert_eq!(
        produce_partition_result(&response).0,
        CORRUPT_MESSAGE,
        "Produce of a batch with a bad CRC"
    );

    // Bad magic byte (offset 16 in the batch header).
    let mut bad = batch("magic");
    bad[16] = 7;
    let response = roundtrip(&mut stream, &produce(TOPIC, bad.freeze()), 7, 3)
        .expect("a batch with a bad magic must get a Produce response");
    assert_ne!(
        produce_partition_result(&response).0,
        0,
        "Produce of a batch with magic 7 succeeded"
    );
    drop(stream);
    assert_api_versions_ok(&mut broker, "bad CRC");

    // The rejected batches left nothing behind: a good batch lands at offset 0 and reads back.
    let mut stream = broker.connect();
    let response =
        roundtrip(&mut stream, &produce(TOPIC, batch("good").freeze()), 7, 4).expect("produce");
    assert_eq!(produce_partition_result(&response), (0, 0));
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = roundtrip(&mut stream, &fetch, 11, 5).expect("fetch");
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.high_watermark, 3);
    let mut data = partition.records.clone().expect("fetched records");
    let sets = RecordBatchDecoder::decode_all(&mut data).expect("decode fetched batches");
    let got: Vec<(i64, Option<Bytes>, Option<Bytes>)> = sets
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| (r.offset, r.key, r.value))
        .collect();
    let want: Vec<(i64, Option<Bytes>, Option<Bytes>)> = records("good")
        .into_iter()
        .map(|r| (r.offset, r.key, r.value))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn every_case_in_sequence_on_one_broker() {
    // The same corpus against a single process, so damage that accumulates (leaked buffers, a wedged
    // acceptor) shows up, followed by normal traffic.
    let mut broker = start();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("zero length", 0i32.to_be_bytes().to_vec(), false),
        ("negative length", (-5i32).to_be_bytes().to_vec(), false),
        ("huge length", i32::MAX.to_be_bytes().to_vec(), false),
        ("2-byte frame", frame_of(&[0, 3]), false),
        ("truncated header + EOF", vec![0, 0, 0, 10, 0, 3], true),
    ];
    for (name, bytes, half_close) in &cases {
        hostile(&mut broker, name, bytes, *half_close, Expect::Close);
    }
    let mut stream = broker.connect();
    create_topic(&mut stream, "after-hostile");
    let response = roundtrip(
        &mut stream,
        &produce("after-hostile", batch("ok").freeze()),
        7,
        9,
    )
    .expect("produce after the hostile corpus");
    assert_eq!(produce_partition_result(&response), (0, 0));
    broker.assert_running();
}
