"""Batches: a stage that works on many documents at once (one model call, one index write for
many small documents is what keeps a busy pipeline close to the bare model's speed, while an idle
one still handles a lone document at once).

A `ClaimSet` holds the members ("document id:version") waiting for a stage, in Redis:

- `add`: a member is *pending* (a sorted set, scored by when it arrived);
- `claim`: a batch takes members (SET NX on one key each, held by the batch) and they move to
  *in flight*; a member claimed by another batch is that batch's to answer for;
- `settle`: the batch is over: members done leave the stage, the others go back to pending;
- `recover`: members in flight whose claim expired (their process died) go back to pending;
- drain: `drain_request` / `drain_begin` coalesce requests for a drain into one task, and
  `drainer` lets one drainer at a time take batches, so while one batch is written the next
  ones gather.

`batch_run` and `batch_drain` run a `BatchStage` (what to load, how big, the work, the failure
of a member) over a claim set; they know nothing of documents (ingestion/pipeline/stages.py
gives them the pipeline's). A crash delays work, never drops it: an expired claim is recovered
by the periodic sweep (ingestion/pipeline/recovery.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from config.redis_client import redis_client
from events.errors import RETRYABLE, SoftTimeLimitExceeded

logger = logging.getLogger(__name__)

DRAIN_FLAG_SECONDS = 30  # a lost drain task holds back the next one at most this long
CLAIM_ROUND = 8  # members tried per claim round trip


class Skip(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a stage's `load`: leave this member out (it is gone or superseded)."""


class ClaimSet:
    """The members waiting for, and in, the batches of one stage (see the module docstring)."""

    def __init__(self, name: str, *, claim_seconds: int | None = None) -> None:
        self.name = name
        # Longer than any healthy batch runs, or a live batch's members would be taken up again
        # by the sweep (harmless, the work is idempotent, but wasted).
        self.claim_seconds = claim_seconds or settings.PIPELINE_BATCH_CLAIM_SECONDS
        prefix = f"{settings.REDIS_KEY_PREFIX}{name}"
        self.pending_key, self.inflight_key = f"{prefix}:pending", f"{prefix}:inflight"
        self._claim_prefix, self._flag_key = f"{prefix}:claim:", f"{prefix}:drain-scheduled"
        self._drainer_key, self._drained_at_key = f"{prefix}:drainer", f"{prefix}:drained-at"

    def _claim_key(self, member: str) -> str:
        return self._claim_prefix + member

    def add(self, members: Iterable[str]) -> None:
        members = list(members)
        if members:
            redis_client().zadd(self.pending_key, dict.fromkeys(members, time.time()))

    def pending_count(self) -> int:
        return redis_client().zcard(self.pending_key)

    def waiting(self, members: list[str]) -> set[str]:
        """Those of `members` that are pending or in flight (one round trip)."""
        pipe = redis_client().pipeline(transaction=False)
        for member in members:
            pipe.zscore(self.pending_key, member)
            pipe.zscore(self.inflight_key, member)
        scores = pipe.execute()
        return {m for i, m in enumerate(members) if scores[2 * i] is not None or scores[2 * i + 1] is not None}

    def claim(self, members: list[str], holder: str, *, from_pending: bool = False) -> list[str]:
        """Claim `members` for the batch `holder`; those won (not claimed by another batch) move
        to in flight, and are returned."""
        if not members:
            return []
        pipe = redis_client().pipeline(transaction=False)
        for member in members:
            pipe.set(self._claim_key(member), holder, nx=True, ex=self.claim_seconds)
        won = [member for member, ok in zip(members, pipe.execute(), strict=True) if ok]
        if won and from_pending:
            # Taking it out of pending is the arbiter: a batch that read a member from pending
            # just before another claimed, finished and released it wins the released claim, but
            # not the member, which is no longer pending (it would be done twice otherwise).
            for member in won:
                pipe.zrem(self.pending_key, member)
            taken = pipe.execute()
            lost = [member for member, removed in zip(won, taken, strict=True) if not removed]
            if lost:
                pipe.delete(*(self._claim_key(member) for member in lost))
                pipe.execute()
            won = [member for member, removed in zip(won, taken, strict=True) if removed]
        if won:
            pipe.zadd(self.inflight_key, dict.fromkeys(won, time.time()))
            pipe.zrem(self.pending_key, *won)
            pipe.execute()
        return won

    def claim_waiting(self, holder: str, *, limit: int, skip: int = 0) -> tuple[list[str], int]:
        """Claim up to `limit` pending members, oldest first, after the first `skip`; returns
        those won and how many were looked at (0: nothing is pending there)."""
        candidates = [raw.decode() for raw in
                      redis_client().zrange(self.pending_key, skip, skip + min(limit, CLAIM_ROUND) - 1)]
        return self.claim(candidates, holder, from_pending=True), len(candidates)

    def settle(self, members: list[str], *, done: Iterable[str]) -> None:
        """Release the claims on `members`: those `done` leave the stage, the others go back to
        pending for the next batch."""
        if not members:
            return
        finished = set(done)
        pipe = redis_client().pipeline(transaction=False)
        pipe.delete(*(self._claim_key(member) for member in members))
        pipe.zrem(self.inflight_key, *members)
        again = [member for member in members if member not in finished]
        if again:
            pipe.zadd(self.pending_key, dict.fromkeys(again, time.time()))
        pipe.execute()

    def recover(self, *, older_than: float | None = None) -> int:
        """Put members whose batch died (in flight, claim expired) back to pending; returns how
        many wait for a drain: those, and any pending longer than `older_than` seconds (default:
        the claim's length), whose own tasks are gone."""
        r = redis_client()
        now = time.time()
        inflight = [raw.decode() for raw in r.zrangebyscore(self.inflight_key, "-inf", now - self.claim_seconds)]
        holders = r.mget([self._claim_key(member) for member in inflight]) if inflight else []
        orphans = [member for member, holder in zip(inflight, holders, strict=True) if holder is None]
        if orphans:
            logger.warning("Recovering %d members of a dead %s batch", len(orphans), self.name)
            self.settle(orphans, done=[])
        older_than = self.claim_seconds if older_than is None else older_than
        return len(orphans) + r.zcount(self.pending_key, "-inf", now - older_than)

    # --- draining ---------------------------------------------------------------------------
    def drain_request(self) -> bool:
        """Ask for a drain; True for the first ask since the last drain began (that caller
        schedules it), False while one is already asked for."""
        return bool(redis_client().set(self._flag_key, "1", nx=True, ex=DRAIN_FLAG_SECONDS))

    def drain_begin(self) -> None:
        """A drain starts: asks from now on schedule the next one (nothing asked for after this
        drain looked is missed)."""
        redis_client().delete(self._flag_key)

    @contextlib.contextmanager
    def drainer(self) -> Iterator[Callable[[], bool]]:
        """Hold the stage's one drainer lock for the block; yields `hold()`, which renews the
        lock and says whether this drainer still holds it (False from the start if another
        drainer does)."""
        r, me = redis_client(), uuid.uuid4().hex
        held = bool(r.set(self._drainer_key, me, nx=True, ex=self.claim_seconds))

        def hold() -> bool:
            return held and bool(r.set(self._drainer_key, me, xx=True, ex=self.claim_seconds))

        try:
            yield hold
        finally:
            if held and r.get(self._drainer_key) == me.encode():
                r.delete(self._drainer_key)

    def drained_since(self) -> float:
        """Seconds since the last drain that handled something ended (inf: none recently)."""
        raw = redis_client().get(self._drained_at_key)
        return time.time() - float(raw) if raw else float("inf")

    def drained(self) -> None:
        redis_client().set(self._drained_at_key, f"{time.time():.3f}", ex=60)


@dataclass(frozen=True)
class BatchStage:
    """What a batch of one stage does with its members."""

    claims: ClaimSet
    load: Callable[[str], Any]  # a member's input; raises Skip to leave it out
    size: Callable[[Any], int]  # its share of the budget
    budget: Callable[[], int]
    work: Callable[[list[tuple[str, Any]]], None]  # the batch's work on (member, input) pairs
    done: Callable[[str], bool]  # whether a batch that has ended did this member already
    fail: Callable[[str, BaseException], None]  # a member's permanent failure
    # Take at most half of what waits, so other processes get the rest instead of idling (for
    # work that uses a core each); else all of it up to the budget.
    share: bool = False


def batch_run(spec: BatchStage, own: str | None = None, *, own_load: Callable[[], Any] | None = None) -> int:
    """Run one batch: the member `own` (a document's own task; None for a drain; `own_load`
    loads it instead of `spec.load`, from what the task has at hand), then other pending members
    while the budget lasts. Returns how many members it claimed (0 when `own`
    is another batch's). Members claimed and not finished (a transient error, a crash) go back
    to pending; each finished one is done, skipped or failed with its reason."""
    holder = own or f"drain:{uuid.uuid4().hex}"
    claims = spec.claims
    claimed: list[str] = []
    finished: list[str] = []
    batch: list[tuple[str, Any]] = []
    budget = spec.budget()

    def take(member: str, load: Callable[[], Any] | None = None) -> None:
        nonlocal budget
        try:
            loaded = load() if load is not None else spec.load(member)
        except Skip:
            finished.append(member)
            return
        except RETRYABLE:
            raise
        except Exception as error:
            spec.fail(member, error)
            finished.append(member)
            return
        batch.append((member, loaded))
        budget -= spec.size(loaded)

    try:
        if own is not None:
            claimed = claims.claim([own], holder)
            if not claimed:
                logger.debug("%s is in another %s batch, which answers for it", own, claims.name)
                return 0
            if spec.done(own):
                finished.append(own)
                return 1
            take(own, own_load)
        waiting = claims.pending_count()
        room = (waiting + 1) // 2 if spec.share else waiting
        skipped = 0  # pending, but claimed by another batch this very moment
        while budget > 0 and room > 0:
            won, looked = claims.claim_waiting(holder, limit=room, skip=skipped)
            if not looked:
                break
            claimed += won
            room -= len(won)
            skipped += looked - len(won)
            for member in won:
                take(member)
        if batch:
            _batch_work(spec, batch)
            finished.extend(member for member, _ in batch)
        return len(claimed)
    finally:
        claims.settle(claimed, done=finished)


def _batch_work(spec: BatchStage, batch: list[tuple[str, Any]]) -> None:
    """The stage's work on the batch; if it fails, on each member alone, so a member that breaks
    a batch fails alone and the others go on."""
    try:
        spec.work(batch)
        return
    except RETRYABLE:
        raise
    except SoftTimeLimitExceeded as error:
        # No time is left to try them one by one: each fails with the reason.
        for member, _ in batch:
            spec.fail(member, error)
        return
    except Exception as error:
        if len(batch) == 1:
            spec.fail(batch[0][0], error)
            return
        logger.exception("A %s batch of %d members failed; doing each alone", spec.claims.name, len(batch))
    for item in batch:
        try:
            spec.work([item])
        except RETRYABLE:
            raise
        except Exception as error:
            spec.fail(item[0], error)


def batch_drain(spec: BatchStage, *, after_batch: Callable[[], None] | None = None,
                seconds: float | None = None) -> int:
    """Run batches of the stage's pending members until none is left, or until `seconds` have
    passed (a task's time limit bounds one drain; the caller asks for another drain for the rest);
    how many it claimed. `after_batch` runs after each batch that took members (the index stage's
    refresh).

    One drainer at a time per stage: a drain that finds another one draining leaves the members
    to it. The drainer looks again after it lets go, so a member that arrived meanwhile is never
    left without one.
    """
    claims = spec.claims
    claims.drain_begin()
    deadline = time.monotonic() + seconds if seconds is not None else float("inf")
    handled = 0
    while claims.pending_count() and time.monotonic() < deadline:
        with claims.drainer() as hold:
            if not hold():
                break
            taken = 1
            while taken and claims.pending_count() and time.monotonic() < deadline:
                # Nothing taken: what waits is being claimed by another batch this very moment
                # (which answers for it).
                taken = batch_run(spec)
                handled += taken
                if taken and after_batch is not None:
                    after_batch()
                hold()
        if not taken:
            break
    if handled:
        claims.drained()
    return handled
