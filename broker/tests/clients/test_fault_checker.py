"""The fault-injection checker's bounded form (issue 11, part 3; the harness is `fault_checker.py`): three
brokers tiered on one `s3s-fs` server, an RF3 topic, two idempotent acks=all producers, an assign reader and
a committing group member, and one round of each fault (kill -9 + restart, SIGSTOP + SIGCONT, replication
links cut + healed, the object store killed + restarted) in an order and on brokers drawn from the printed
seed. Then the seven checks of `fault_checker`, over a history mostly read back from the object store.

The long form: `STRATA_LONG_TESTS=1 STRATA_CHECKER_ROUNDS=100 pytest -s test_fault_checker.py` (outside CI;
its results go to benchmarks/RESULTS.md with the seeds). `STRATA_CHECKER_TIERED=0` runs without tiering
(every replica keeps the whole log locally; no object-store faults).
"""

from __future__ import annotations

import os

import pytest

import fault_checker
from conftest import LONG_TESTS

TIERED = os.environ.get("STRATA_CHECKER_TIERED", "1") not in ("0", "false")
KINDS = fault_checker.TIERED_FAULTS if TIERED else fault_checker.FAULTS
ROUNDS = int(os.environ.get("STRATA_CHECKER_ROUNDS") or (100 if LONG_TESTS else len(KINDS)))


@pytest.mark.timeout(ROUNDS * 150 + 300)
def test_randomized_faults_lose_duplicate_or_reorder_nothing(cluster_factory, s3_factory, topic_name, rng):
    links = fault_checker.Links([1, 2, 3])
    try:
        s3 = s3_factory("s3s") if TIERED else None
        c = fault_checker.make_cluster(cluster_factory, links, s3)
        seed = rng.randrange(2**31)
        report = fault_checker.run(c, links, topic_name, seed, ROUNDS, s3=s3)
        print("\n" + report.summary())
        assert not report.violations, "\n".join([report.summary(), *report.violations[:30]])
        assert report.acked > 0 and report.read >= report.acked
    finally:
        links.close()
