"""The arithmetic of ``bench/waiters.py``'s extrapolation (pure: no AWS, no local cloud)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "waiters.py"
    spec = importlib.util.spec_from_file_location("bench_waiters", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.mark.parametrize(
    ("duration", "delay", "polls"),
    [
        (0, 30, 1),  # already done: the first poll succeeds
        (1, 30, 2),  # not yet at the first poll, done at the second (t=30)
        (30, 30, 2),  # done exactly at the second poll
        (31, 30, 3),
        (45, 30, 3),  # polls at 0, 30, 60
        (900, 30, 31),  # a 15-minute restore
        (300, 15, 21),  # a 5-minute rollout
    ],
)
def test_polls_for(duration: float, delay: float, polls: int) -> None:
    assert bench.polls_for(duration, delay) == polls


def test_published_waiters_come_from_botocore() -> None:
    waiters = bench.published_waiters()
    assert set(waiters) == {name for _, _, name in bench.STEPS}
    # boto3's published configuration (botocore's waiter models)
    assert waiters["db_snapshot_available"] == bench.Published(30.0, 60)
    assert waiters["stack_create_complete"] == bench.Published(30.0, 120)
    assert waiters["services_stable"] == bench.Published(15.0, 40)
    assert waiters["stack_delete_complete"] == bench.Published(30.0, 120)


def test_extrapolate_adds_polls_to_the_other_calls_and_holds_the_waits() -> None:
    waiters = bench.published_waiters()
    durations = {"snapshot": 300, "restore": 900, "rollout": 300, "delete": 300}
    got = bench.extrapolate(13, durations, waiters, other_seconds=0.5)
    assert got["polls"] == {
        "db_snapshot_available": 11,
        "stack_create_complete": 31,
        "services_stable": 21,
        "stack_delete_complete": 11,
    }
    assert got["calls"] == 13 + 74
    # each waiter holds the process until its last poll: 300 + 900 + 300 + 300 s, plus the rest
    assert got["compute_seconds_held"] == 1800.5
    assert got["gives_up"] == []


def test_extrapolate_names_a_waiter_that_would_give_up() -> None:
    waiters = bench.published_waiters()
    # services_stable gives up after 40 polls (10 minutes at 15 s): a 20-minute rollout exceeds it
    got = bench.extrapolate(0, {"snapshot": 60, "restore": 60, "rollout": 1200, "delete": 60}, waiters)
    assert got["polls"]["services_stable"] == 81
    assert got["gives_up"] == ["services_stable"]
