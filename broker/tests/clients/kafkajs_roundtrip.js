// kafkajs (a pure JavaScript client) against a strata broker; run by test_kafkajs.py.
//
//   node kafkajs_roundtrip.js BOOTSTRAP TOPIC
//
// Creates TOPIC (2 partitions), produces GZIP and uncompressed batches with explicit partitions, keys,
// headers and timestamps, checks offsets through the admin API (fetchTopicOffsets,
// fetchTopicOffsetsByTimestamp), deletes a scratch topic, and prints one line
// `RESULT {json}` describing every record it produced, so the Python side can read them back with another
// client. Group consumers are exercised by kafkajs_group.js. Exits 1 on the first mismatch.
'use strict';

const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [bootstrap, topic] = process.argv.slice(2);
if (!bootstrap || !topic) {
  console.error('usage: node kafkajs_roundtrip.js BOOTSTRAP TOPIC');
  process.exit(2);
}

function check(cond, what) {
  if (!cond) {
    throw new Error(`mismatch: ${what}`);
  }
}

function eq(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  check(g === w, `${what}: got ${g}, want ${w}`);
}

async function main() {
  const kafka = new Kafka({
    clientId: 'strata-kafkajs-test',
    brokers: [bootstrap],
    logLevel: logLevel.ERROR,
    retry: { retries: 5, initialRetryTime: 100 },
  });
  const admin = kafka.admin();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await admin.connect();
  await producer.connect();
  try {
    const created = await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic, numPartitions: 2, replicationFactor: 1,
                 configEntries: [{ name: 'retention.ms', value: '86400000' }] }],
    });
    eq(created, true, 'createTopics of a new topic');
    const again = await admin.createTopics({ topics: [{ topic, numPartitions: 2, replicationFactor: 1 }] });
    eq(again, false, 'createTopics of an existing topic');
    check((await admin.listTopics()).includes(topic), 'listTopics includes the topic');
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    eq(md.topics[0].partitions.map((p) => p.partitionId).sort(), [0, 1], 'partitions in metadata');

    const base = Date.now() - 3600 * 1000;
    const records = [];
    let n = 0;
    for (const [compression, acks] of [[CompressionTypes.GZIP, -1], [CompressionTypes.GZIP, -1],
                                       [CompressionTypes.None, 1]]) {
      const messages = [];
      for (let i = 0; i < 40; i++, n++) {
        messages.push({
          partition: n % 2,
          key: `key-${n}`,
          value: `value-${n}-`.repeat(1 + (n % 13)),
          timestamp: String(base + n * 1000),
          headers: { idx: String(n) },
        });
      }
      const meta = await producer.send({ topic, compression, acks, messages });
      const baseOf = {};
      for (const m of meta) {
        eq(m.errorCode, 0, `produce error for partition ${m.partition}`);
        baseOf[m.partition] = Number(m.baseOffset);
      }
      const next = { 0: 0, 1: 0 };
      for (const m of messages) {
        records.push({ partition: m.partition, offset: baseOf[m.partition] + next[m.partition]++,
                       key: m.key, value: m.value, timestamp: Number(m.timestamp),
                       headers: [['idx', m.headers.idx]] });
      }
    }

    const perPartition = { 0: records.filter((r) => r.partition === 0),
                           1: records.filter((r) => r.partition === 1) };
    for (const p of [0, 1]) {
      eq(perPartition[p].map((r) => r.offset), [...Array(60).keys()], `offsets of partition ${p}`);
    }
    // The last send used acks=1: its records become visible (high watermark) after the broker's next
    // group-commit fsync, not at the ack, so poll briefly — as with any replicated Kafka topic.
    let offsets = await admin.fetchTopicOffsets(topic);
    for (let tries = 0; tries < 100 && offsets.some((o) => o.high !== '60'); tries++) {
      await new Promise((r) => setTimeout(r, 50));
      offsets = await admin.fetchTopicOffsets(topic);
    }
    for (const o of offsets) {
      eq([o.partition, o.low, o.high, o.offset], [o.partition, '0', '60', '60'],
         `fetchTopicOffsets partition ${o.partition}`);
    }
    eq(offsets.length, 2, 'fetchTopicOffsets partition count');

    for (const k of [0, 1, 2, 37, 80, 119]) {
      const ts = base + k * 1000;
      const byTs = await admin.fetchTopicOffsetsByTimestamp(topic, ts);
      for (const o of byTs) {
        const first = perPartition[o.partition].find((r) => r.timestamp >= ts);
        const want = first ? String(first.offset) : '60';
        eq(o.offset, want, `fetchTopicOffsetsByTimestamp(${ts}) partition ${o.partition}`);
      }
    }

    const scratch = `${topic}-scratch`;
    eq(await admin.createTopics({ topics: [{ topic: scratch, numPartitions: 1 }] }), true, 'create scratch');
    await admin.deleteTopics({ topics: [scratch], timeout: 10000 });
    check(!(await admin.listTopics()).includes(scratch), 'deleted topic still listed');

    console.log(`RESULT ${JSON.stringify({ topic, records })}`);
  } finally {
    await producer.disconnect();
    await admin.disconnect();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
