//! librdkafka (through the `rdkafka` crate) against a real `strata` process: an idempotent acks=all
//! FutureProducer writes keyed records with headers and timestamps in every codec, and a BaseConsumer
//! with a manual assignment reads them back byte for byte.

mod common;

use std::time::{Duration, Instant};

use common::TestBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, Timestamp, TopicPartitionList};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 400;

/// One record as produced and as expected back.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

async fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("CreateTopics request");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code:?}"));
    }
}

async fn produce_all(bootstrap: &str, topic: &str, codec: &str) -> Vec<Expected> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", codec)
        .set("linger.ms", "10")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let base_ts = 1_700_000_000_000i64;
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let key = format!("key-{}", i % 37).into_bytes();
        let value = format!("{codec}-value-{i}-")
            .repeat(1 + i % 50)
            .into_bytes();
        let headers = vec![
            ("seq".to_string(), Some(i.to_string().into_bytes())),
            ("empty".to_string(), None),
        ];
        let mut owned = OwnedHeaders::new();
        for (k, v) in &headers {
            owned = owned.insert(Header {
                key: k,
                value: v.as_ref(),
            });
        }
        let timestamp = base_ts + i as i64;
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(owned)
            .timestamp(timestamp);
        let future = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("enqueue record {i}: {e}"));
        pending.push((future, key, value, headers, timestamp));
    }
    let mut out = Vec::with_capacity(RECORDS);
    for (i, (future, key, value, headers, timestamp)) in pending.into_iter().enumerate() {
        let delivery = future
            .await
            .expect("delivery future not cancelled")
            .unwrap_or_else(|(e, _)| panic!("record {i} ({codec}) not delivered: {e}"));
        out.push(Expected {
            partition: delivery.partition,
            offset: delivery.offset,
            key,
            value,
            headers,
            timestamp,
        });
    }
    out
}

fn consume_all(bootstrap: &str, topic: &str, count: usize) -> Vec<Expected> {
    // librdkafka refuses assign() without a group.id; with a manual assignment and no commits the group
    // is never joined.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "strata-it-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition to assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::with_capacity(count);
    while out.len() < count && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = result.unwrap_or_else(|e| panic!("consumer error: {e}"));
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                    .collect()
            })
            .unwrap_or_default();
        let timestamp = match m.timestamp() {
            Timestamp::CreateTime(ts) => ts,
            other => panic!("record at offset {} has timestamp {other:?}", m.offset()),
        };
        out.push(Expected {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            timestamp,
        });
    }
    assert_eq!(
        out.len(),
        count,
        "consumed {} of {count} records within 60s",
        out.len()
    );
    out
}

async fn roundtrip(codec: &str) {
    let broker = TestBroker::start();
    let topic = format!("roundtrip-{codec}");
    create_topic(&broker.bootstrap(), &topic).await;
    let mut produced = produce_all(&broker.bootstrap(), &topic, codec).await;
    let mut consumed = consume_all(&broker.bootstrap(), &topic, RECORDS);

    produced.sort_by_key(|e| (e.partition, e.offset));
    consumed.sort_by_key(|e| (e.partition, e.offset));
    for p in 0..PARTITIONS {
        let offsets: Vec<i64> = consumed
            .iter()
            .filter(|e| e.partition == p)
            .map(|e| e.offset)
            .collect();
        let n = offsets.len() as i64;
        assert_eq!(
            offsets,
            (0..n).collect::<Vec<_>>(),
            "partition {p}: offsets not dense from 0"
        );
    }
    for (got, want) in consumed.iter().zip(&produced) {
        assert_eq!(
            got, want,
            "record at partition {} offset {} differs",
            want.partition, want.offset
        );
    }
    assert_eq!(consumed.len(), produced.len());
    // Same key, same partition.
    for a in &produced {
        for b in produced.iter().filter(|b| b.key == a.key) {
            assert_eq!(a.partition, b.partition, "key {:?} split", a.key);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_none() {
    roundtrip("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_gzip() {
    roundtrip("gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_snappy() {
    roundtrip("snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_lz4() {
    roundtrip("lz4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_zstd() {
    roundtrip("zstd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_missing_partition_fails() {
    let broker = TestBroker::start_with(&["--auto-create-topics-enable", "false"]);
    create_topic(&broker.bootstrap(), "three-partitions").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.timeout.ms", "5000")
        .create()
        .expect("producer");
    let result = producer
        .send(
            FutureRecord::<(), _>::to("three-partitions")
                .partition(PARTITIONS + 4)
                .payload("x"),
            Duration::from_secs(5),
        )
        .await;
    match result {
        Err((KafkaError::MessageProduction(code), _)) => assert!(
            matches!(
                code,
                RDKafkaErrorCode::UnknownPartition | RDKafkaErrorCode::UnknownTopicOrPartition
            ),
            "produce to a partition that does not exist: {code:?}"
        ),
        other => panic!("produce to a partition that does not exist: {other:?}"),
    }
}
