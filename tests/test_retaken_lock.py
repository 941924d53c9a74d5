"""A late duplicate that takes the lock after its request ended, then dies, never runs that request again.

Two deliveries of one ``Promotion Requested`` run at once: the first reads, takes the lock, runs and ends
while the second is still between its read (the request was new then) and its ``take_lock``, which now
succeeds: the environment was free again. The second would see the state moved on and give the lock back,
but it dies first. Found by the short soak under load (a lock still held once every request had ended).

The lock was written after the request's ending record: the parser reads the ending as the environment's
state and the lock as held by no promotion (``EnvRecord.retaken``). Nothing restarts or re-ends the
request (one terminal event), requests that arrive wait, and once the lock's lease ran out the sweep (or
the next request) releases it, claimed create-only, and what waits starts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chalicelib.domain.events import TERMINAL_EVENT
from chalicelib.domain.model import Stage
from chalicelib.invocation import invocation
from chalicelib.usecases.requests import release_retaken
from tests.flow import Pipeline
from tests.test_crash_safety import Crash
from tests.test_sweep import later, sweep
from tests.test_sweep_stuck import QA, V1, V2, deployment_event, request_event, stack_event, v1_running  # noqa: F401

V3 = "20261128010000"
TERMINAL = set(TERMINAL_EVENT.values())


def _late_duplicate(p: Pipeline, event: dict[str, Any], finish: Any, *, dies: bool = True) -> dict[str, Any] | None:
    """Deliver ``event`` twice at once: the first delivery runs (and ``finish`` ends its promotion)
    inside the second's window between its read and its ``take_lock``; the second then dies, or lives on."""
    store = p.deps.store
    real = store.take_lock

    def racing(lock: Any) -> bool:
        store.take_lock = real  # type: ignore[method-assign]
        p.invoke("promotion_requested", event, "first-delivery")
        finish()
        assert real(lock), "the environment is free again: the late duplicate takes the lock"
        if dies:
            raise Crash("the late duplicate died before giving the lock back")
        return True

    store.take_lock = racing  # type: ignore[method-assign]
    try:
        if not dies:
            return p.invoke("promotion_requested", event, "late-duplicate")
        with pytest.raises(Crash):
            p.invoke("promotion_requested", event, "late-duplicate")
        return None
    finally:
        store.take_lock = real  # type: ignore[method-assign]


def test_a_late_duplicate_that_lives_gives_the_lock_back_at_once(v1_running: Pipeline, outbox: Any) -> None:  # noqa: F811 (the fixture)
    p = v1_running
    a = request_event(p, V2)

    result = _late_duplicate(p, a, _completes(p), dies=False)
    assert result is not None and result["action"] == "ignore" and "already answered" in result["reason"], result
    rec = p.deps.store.read(QA)
    assert rec.promotion is None and rec.retaken is None and str(rec.active) == V2
    assert _terminals(outbox) == {a["id"]: 1}


def _completes(p: Pipeline) -> Any:
    """What ends the first delivery's promotion of V2: its stack's and its deployment's events."""

    def complete() -> None:
        p.invoke("stack_status", stack_event(p, V2, "CREATE_COMPLETE"))
        p.invoke("deployment_state", deployment_event(p, "COMPLETED"))

    return complete


def _terminals(outbox: Any) -> Counter[str]:
    return Counter(e["detail"]["promotion_id"] for e in outbox.drain() if e["detail-type"] in TERMINAL)


def test_completed_request_retaken_by_a_dying_duplicate(v1_running: Pipeline, outbox: Any, aws: Any) -> None:  # noqa: F811 (the fixture)
    p = v1_running
    a = request_event(p, V2)

    _late_duplicate(p, a, _completes(p))
    rec = p.deps.store.read(QA)
    assert rec.promotion is None and rec.retaken is not None and rec.retaken.id == a["id"]
    assert str(rec.active) == V2 and rec.state.has_answered(rec.retaken.id)

    # Redelivered again (Lambda's retry of the one that died, and another duplicate): nothing runs.
    assert p.invoke("promotion_requested", a, "late-duplicate")["action"] == "ignore"
    assert p.invoke("promotion_requested", a, "another")["action"] == "ignore"
    # The stack's late status event finds no promotion in flight: no second cutover.
    assert p.invoke("stack_status", stack_event(p, V2, "CREATE_COMPLETE"))["action"] == "ignore"
    # A new request waits while the lease runs; the sweep leaves the lock to its lease.
    take_source_snapshot_v3(aws)
    b = request_event(p, V3)
    queued = p.invoke("promotion_requested", b, "request-b")
    assert queued["action"] == "queue" and "had ended" in queued["reason"], queued
    early = sweep(p.deps)
    assert early.by_kind("reconcile") == [] and early.kept["lock_lease_running"] == 1
    assert p.deps.store.read(QA).retaken is not None

    # Past the lease: the sweep releases the lock and what waits starts. The request ended once.
    later(p.deps, hours=1)
    [entry] = sweep(p.deps).by_kind("reconcile")
    assert entry.item.reason == "retaken_lock" and entry.status == "done", entry.outcome
    rec = p.deps.store.read(QA)
    assert rec.retaken is None and rec.promotion is not None and rec.promotion.id == b["id"]
    assert rec.promotion.stage is Stage.RESTORING and str(rec.active) == V2
    terminals = _terminals(outbox)
    assert terminals == {a["id"]: 1}, terminals


def test_rejected_request_retaken_then_released_by_the_next_request(v1_running: Pipeline, outbox: Any) -> None:  # noqa: F811 (the fixture)
    """Refused under the lock (V1 is already active), retaken, released by a request past the lease."""
    p = v1_running
    again = request_event(p, V1)
    _late_duplicate(p, again, lambda: None)
    rec = p.deps.store.read(QA)
    assert rec.promotion is None and rec.retaken is not None
    later(p.deps, hours=1)
    started = p.invoke("promotion_requested", request_event(p, V2), "request-b")
    assert started["action"] == "start", started
    terminals = _terminals(outbox)
    assert terminals == {again["id"]: 1}, terminals


def test_two_releases_at_once_release_once(v1_running: Pipeline, outbox: Any, aws: Any) -> None:  # noqa: F811 (the fixture)
    """Two sweeps read the same retaken lock; the first releases it and the next request takes the lock;
    the second's release is refused by its claim and never deletes the new request's lock."""
    p = v1_running
    a = request_event(p, V2)

    _late_duplicate(p, a, _completes(p))
    later(p.deps, hours=1)
    seen = p.deps.store.read(QA)  # both sweeps read this
    take_source_snapshot_v3(aws)
    b = request_event(p, V3)
    with invocation("sweep-1"):
        assert release_retaken(p.deps, seen).action == "release"
    assert p.invoke("promotion_requested", b, "request-b")["action"] == "start"
    with invocation("sweep-2"):
        second = release_retaken(p.deps, seen)
    assert second.action == "ignore" and "another invocation" in second.reason, second
    rec = p.deps.store.read(QA)
    assert rec.promotion is not None and rec.promotion.id == b["id"]


def take_source_snapshot_v3(aws: Any) -> None:
    from tests.conftest import take_source_snapshot

    take_source_snapshot(aws, V3)
