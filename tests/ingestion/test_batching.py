"""The claim sets and batches of ingestion/pipeline/batching.py on their own, against the real
Redis (db 15, this run's key prefix), without a worker: members are plain strings here."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
import redis

from config.redis_client import redis_client
from ingestion.pipeline.batching import CLAIM_ROUND, BatchStage, ClaimSet, Skip, batch_drain, batch_run


@pytest.fixture
def claims():
    claim_set = ClaimSet(f"test-{uuid.uuid4().hex[:8]}")
    yield claim_set
    r = redis_client()
    r.delete(claim_set.pending_key, claim_set.inflight_key, *r.keys(f"{claim_set.pending_key.rsplit(':', 1)[0]}:*"))


def stage_of(claims: ClaimSet, *, budget: int = 100, share: bool = False, work=None, load=None):
    """A stage that records what it worked on and what failed."""
    worked: list[str] = []
    failed: dict[str, str] = {}

    def default_work(batch):
        worked.extend(member for member, _ in batch)

    spec = BatchStage(
        claims=claims, load=load or (lambda member: member), size=lambda loaded: 1, budget=lambda: budget,
        work=work or default_work, done=lambda member: False,
        fail=lambda member, error: failed.__setitem__(member, str(error)), share=share,
    )
    return spec, worked, failed


def test_it_claims_a_member_for_one_batch_only_and_settles_it(claims):
    claims.add(["a", "b", "c"])
    assert claims.claim(["a", "b"], "batch-1") == ["a", "b"]
    assert claims.claim(["b", "c"], "batch-2") == ["c"]  # b is batch-1's to answer for
    assert claims.pending_count() == 0
    assert claims.waiting(["a", "b", "c", "d"]) == {"a", "b", "c"}

    claims.settle(["a", "b"], done=["a"])
    assert claims.waiting(["a", "b"]) == {"b"}  # a left the stage; b waits for the next batch
    assert claims.pending_count() == 1
    assert claims.claim(["b"], "batch-3") == ["b"]  # its claim was released


def test_a_claim_that_expires_is_recovered_and_a_live_one_is_not(claims):
    short = ClaimSet(claims.name, claim_seconds=1)
    short.add(["dead", "alive"])
    assert short.claim(["dead"], "dead-batch") == ["dead"]
    assert claims.claim(["alive"], "live-batch") == ["alive"]  # held for the default claim length
    # Both have been in flight for longer than a claim lasts; only the dead batch's claim expired.
    redis_client().zadd(short.inflight_key, {"dead": time.time() - 5, "alive": time.time() - 5})
    time.sleep(1.1)

    assert short.recover() == 1
    assert short.pending_count() == 1 and short.waiting(["dead"]) == {"dead"}
    assert redis_client().zscore(short.pending_key, "alive") is None
    assert short.claim(["dead"], "next-batch") == ["dead"]


def test_recover_reports_members_pending_for_long(claims):
    claims.add(["old"])
    redis_client().zadd(claims.pending_key, {"old": time.time() - 100})
    claims.add(["new"])
    assert claims.recover(older_than=50) == 1  # "old" lost its task; "new" has its own on the way
    assert claims.recover(older_than=0) == 2


def test_a_batch_takes_its_own_member_then_waiting_ones_within_its_budget(claims):
    spec, worked, failed = stage_of(claims, budget=3)
    claims.add(["own"] + [f"w{i}" for i in range(20)])
    # The budget is checked a claim round (CLAIM_ROUND members) at a time.
    assert batch_run(spec, "own") == 1 + CLAIM_ROUND
    assert worked[0] == "own" and len(worked) == 1 + CLAIM_ROUND
    assert claims.pending_count() == 20 - CLAIM_ROUND and not failed
    assert redis_client().zcard(claims.inflight_key) == 0

    # A member another batch holds: its own task does nothing.
    claims.add(["held"])
    claims.claim(["held"], "other-batch")
    assert batch_run(spec, "held") == 0
    assert "held" not in worked


def test_a_sharing_batch_leaves_half_of_what_waits_to_other_processes(claims):
    spec, worked, _ = stage_of(claims, share=True)
    claims.add([f"m{i}" for i in range(10)])
    batch_run(spec)
    assert len(worked) == 5 and claims.pending_count() == 5


def test_a_member_that_breaks_the_batch_fails_alone(claims):
    def work(batch):
        if any(member == "bad" for member, _ in batch):
            raise ValueError("unreadable")
        worked.extend(member for member, _ in batch)

    def load(member):
        if member == "gone":
            raise Skip
        return member

    spec, worked, failed = stage_of(claims, work=work, load=load)
    claims.add(["good-1", "bad", "gone", "good-2"])
    assert batch_run(spec) == 4
    assert sorted(worked) == ["good-1", "good-2"]
    assert failed == {"bad": "unreadable"}
    assert claims.pending_count() == 0 and redis_client().zcard(claims.inflight_key) == 0


def test_a_transient_failure_puts_the_whole_batch_back_to_pending(claims):
    def work(batch):
        raise redis.ConnectionError("Redis went away")

    spec, _, failed = stage_of(claims, work=work)
    claims.add(["a", "b"])
    with pytest.raises(redis.ConnectionError):
        batch_run(spec, "a")
    assert not failed
    assert claims.waiting(["a", "b"]) == {"a", "b"} and claims.pending_count() == 2
    assert claims.claim(["a", "b"], "retry") == ["a", "b"]  # no claim left behind


def test_drain_requests_are_coalesced_until_the_drain_begins(claims):
    assert claims.drain_request() is True
    assert claims.drain_request() is False
    claims.drain_begin()
    assert claims.drain_request() is True


def counting(seconds: float):
    """Work that takes `seconds` a batch and counts how often each member was worked on, from
    several threads."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def work(batch):
        time.sleep(seconds)
        with lock:
            counts.update(member for member, _ in batch)

    return work, counts


def test_a_drain_stops_taking_batches_when_its_time_is_up(claims):
    work, counts = counting(0.05)
    spec, _, _ = stage_of(claims, budget=4, work=work)
    claims.add([f"doc-{i}" for i in range(100)])
    handled = batch_drain(spec, seconds=0.2)
    assert 0 < handled < 100 and sum(counts.values()) == handled  # whole batches, then it stopped
    assert claims.pending_count() == 100 - handled and redis_client().zcard(claims.inflight_key) == 0


def test_two_drainers_racing_work_each_member_exactly_once(claims):
    work, counts = counting(0.005)
    spec, _, failed = stage_of(claims, budget=16, work=work)
    members = [f"doc-{i}" for i in range(200)]
    claims.add(members)
    handled: list[int] = []
    drainers = [threading.Thread(target=lambda: handled.append(batch_drain(spec))) for _ in range(2)]
    for drainer in drainers:
        drainer.start()
    # Members keep arriving while they drain: the drainer looks again before it lets go.
    late = [f"late-{i}" for i in range(20)]
    claims.add(late)
    for drainer in drainers:
        drainer.join(timeout=60)
    batch_drain(spec)  # what a drain asked for after the last one looked would do

    assert counts == Counter(members + late)  # each once, none missed
    assert not failed
    assert claims.pending_count() == 0 and redis_client().zcard(claims.inflight_key) == 0


def test_batches_racing_without_a_drainer_never_share_a_member(claims):
    """Each embed process runs its own batches at once: claims alone keep them apart."""
    work, counts = counting(0.002)
    spec, _, _ = stage_of(claims, budget=8, work=work)
    members = [f"doc-{i}" for i in range(150)]
    claims.add(members)

    def process():
        while claims.pending_count():
            batch_run(spec)

    workers = [threading.Thread(target=process) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert counts == Counter(members)
