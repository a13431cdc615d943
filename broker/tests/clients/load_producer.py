"""Idempotent acks=all load for the kill -9 test, run as its own process.

    python load_producer.py BOOTSTRAP TOPIC PARTITIONS COUNT ACK_FILE

Produces COUNT records round-robin over PARTITIONS with value b"<partition>:<seq>:<padding>", where seq
counts up per partition. Each successful delivery appends "<partition> <seq> <offset>" to ACK_FILE (flushed
at once, so the file is complete up to the moment the test reads it). Keeps retrying through broker
crashes (long message timeout). Exits 0 when every record was acknowledged, 1 if any delivery failed, 2 on
a fatal producer error.
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import KafkaError, Producer


def main() -> int:
    bootstrap, topic, partitions, count, ack_path = sys.argv[1:6]
    partitions, count = int(partitions), int(count)
    fatal: list[KafkaError] = []
    failed = 0
    acked = 0

    def on_error(err: KafkaError) -> None:
        print(f"client error: {err}", flush=True)
        if err.fatal():
            fatal.append(err)

    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 300000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "retry.backoff.ms": 50,
        "queue.buffering.max.messages": 20000,
        "error_cb": on_error,
    })

    with open(ack_path, "w", buffering=1) as acks:
        def on_delivery(err, msg):
            nonlocal failed, acked
            q, seq = msg.value().split(b":")[:2]
            if err is not None:
                failed += 1
                print(f"delivery failed partition={int(q)} seq={int(seq)}: {err}", flush=True)
                return
            acked += 1
            acks.write(f"{int(q)} {int(seq)} {msg.offset()}\n")

        pad = b"p" * 64
        started = time.monotonic()
        for i in range(count):
            if fatal:
                break
            q, seq = i % partitions, i // partitions
            while True:
                try:
                    p.produce(topic, value=b"%d:%d:" % (q, seq) + pad, partition=q, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        while len(p) > 0 and not fatal:
            p.poll(0.1)
        p.flush(10)
    secs = time.monotonic() - started
    print(f"produced {count} records: {acked} acknowledged, {failed} failed, in {secs:.1f}s", flush=True)
    if fatal:
        print(f"fatal producer error: {fatal[0]}", flush=True)
        return 2
    return 0 if failed == 0 and acked == count else 1


if __name__ == "__main__":
    sys.exit(main())
