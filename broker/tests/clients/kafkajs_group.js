// kafkajs consumer group against a strata broker; run by test_kafkajs.py.
//
//   node kafkajs_group.js BOOTSTRAP TOPIC GROUP
//
// Creates TOPIC (2 partitions), produces 20 records, consumes them with a kafkajs group consumer
// (JoinGroup/SyncGroup/Heartbeat/OffsetCommit), then reads the group's committed offsets through the
// admin API and prints `RESULT {json}`. Exits 1 on error or if not every record arrives within 30 s.
'use strict';

const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, group] = process.argv.slice(2);

async function main() {
  const kafka = new Kafka({
    clientId: 'strata-kafkajs-group',
    brokers: [bootstrap],
    logLevel: logLevel.ERROR,
    retry: { retries: 5, initialRetryTime: 100 },
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  const producer = kafka.producer();
  await producer.connect();
  const sent = [];
  for (let i = 0; i < 20; i++) {
    sent.push({ partition: i % 2, value: `v${i}` });
  }
  await producer.send({ topic, messages: sent });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  await consumer.run({
    autoCommit: true,
    eachMessage: async ({ message }) => {
      got.push(message.value.toString());
      if (got.length >= sent.length) done();
    },
  });
  const timer = setTimeout(() => done(), 30000);
  await finished;
  clearTimeout(timer);
  await consumer.disconnect();
  const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const groups = await admin.listGroups();
  await admin.disconnect();
  console.log('RESULT ' + JSON.stringify({ got, offsets, groups: groups.groups.map((g) => g.groupId) }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
