"""``--wait``: following a promotion from the ledger's events (pure: a fake source and a fake clock)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.domain.model import (
    DeployEntry,
    EnvRecord,
    EnvState,
    LastOutcome,
    Outcome,
    Promotion,
    QueuedRequest,
    Request,
    Stage,
    answer_key,
)
from chalicelib.domain.names import Namespace
from tierlift.errors import ExitCode
from tierlift.follow import Follower, Milestone, milestones_from_events, summary
from tierlift.history import LedgerEvent

NS = Namespace.parse("xy-0146-prod")
T0 = datetime(2026, 11, 28, 7, 0, 0, tzinfo=UTC)
PID = "6f1c0e2a-0000-4000-8000-000000000001"


def event(detail_type: str, seconds: int, event_id: str = "", **detail: Any) -> LedgerEvent:
    base = {"tenant": "xy-0146", "environment": "prod"}
    if detail_type != "Promotion Requested":
        base["promotion_id"] = PID
    return LedgerEvent(
        event_id or f"e-{detail_type}-{seconds}", detail_type, T0 + timedelta(seconds=seconds), {**base, **detail}
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.01)


class Script:
    """A source whose answers grow with the number of reads (what the pipeline has put by then)."""

    def __init__(self, steps: list[list[Milestone]]) -> None:
        self.steps = steps
        self.reads = 0

    def read(self) -> list[Milestone]:
        self.reads += 1
        return [m for step in self.steps[: self.reads] for m in step]


def follow(source: Any, timeout: float = 60.0, poll: float = 2.0) -> tuple[Any, str, Clock]:
    clock = Clock()
    out = io.StringIO()
    follower = Follower(
        source, NS, PID, started=T0, timeout=timeout, poll=poll, out=out, live=False, clock=clock, sleep=clock.sleep
    )
    return follower.run(), out.getvalue(), clock


def test_events_become_milestones_with_the_outcome_on_the_terminal_one() -> None:
    events = [
        event("Promotion Requested", 0, PID, requested_by="alice"),
        event("Promotion Started", 1, version="20261127200000"),
        event("Database Ready", 600, endpoint="db.example"),
        event("Service Deploying", 601, task_definition="arn:aws:ecs:us-east-1:1:task-definition/xy-0146-prod:7"),
        event("Promotion Rolled Back", 900, reason="circuit breaker"),
    ]
    milestones = milestones_from_events(events)
    assert [m.stage for m in milestones] == ["requested", "restoring", "database_ready", "deploying", "rolled_back"]
    assert [m.outcome for m in milestones] == [None, None, None, None, "rolled_back"]


def test_an_operators_cancel_command_is_not_the_pipelines_cancelled_outcome() -> None:
    command = event("Promotion Cancelled", 5, command="cancel", requested_by="bob", reason="wrong window")
    done = event("Promotion Cancelled", 9, reason="cancelled by bob: wrong window")
    milestones = milestones_from_events([command, done])
    assert [(m.stage, m.outcome) for m in milestones] == [("cancel_requested", None), ("cancelled", "cancelled")]
    assert milestones[0].detail == {"by": "bob: wrong window"}


def test_follow_prints_a_line_per_stage_and_exits_zero_on_completion() -> None:
    source = Script(
        [
            milestones_from_events([event("Promotion Requested", 0, PID, requested_by="alice")]),
            milestones_from_events([event("Promotion Started", 1, version="20261127200000")]),
            [],
            milestones_from_events(
                [event("Database Ready", 610), event("Service Deploying", 611), event("Promotion Completed", 900)]
            ),
        ]
    )
    result, out, clock = follow(source)
    assert result.code == ExitCode.OK and result.outcome == "completed"
    lines = out.splitlines()
    assert [line.split()[1] for line in lines] == ["requested", "restoring", "database", "deploying", "completed"]
    assert "restoring took 10m09s" in lines[2]
    assert lines[0].split()[0] == "+0s" and lines[-1].split()[0] == "+15m00s"
    # One read every poll (2 s), never a tight loop.
    assert source.reads == 4 and 6.0 <= clock.now < 6.5
    assert summary(result, NS, 60) == "completed in 15m00s: xy-0146-prod runs 20261127200000"


def test_each_outcome_has_its_exit_code_and_reason() -> None:
    cases = {
        "Promotion Rejected": ExitCode.REJECTED,
        "Promotion Failed": ExitCode.FAILED,
        "Promotion Rolled Back": ExitCode.ROLLED_BACK,
        "Promotion Cancelled": ExitCode.CANCELLED,
    }
    for detail_type, code in cases.items():
        source = Script([milestones_from_events([event(detail_type, 3, reason="because")])])
        result, _, _ = follow(source)
        assert (result.code, result.reason) == (code, "because"), detail_type
        assert summary(result, NS, 60).endswith(": because")


def test_timeout_stops_following_with_its_own_code() -> None:
    source = Script([milestones_from_events([event("Promotion Started", 1)])])
    result, _, clock = follow(source, timeout=10, poll=2)
    assert result.code == ExitCode.TIMED_OUT and result.outcome is None
    assert clock.now >= 10 and source.reads <= 6
    assert "timed out after 10s (restoring)" in summary(result, NS, 10)
    assert json.loads(json.dumps(result.as_dict()))["outcome"] == "timed_out"


def test_a_waiting_approval_line_says_how_to_approve() -> None:
    source = Script([milestones_from_events([event("Approval Requested", 1, expires_at="2026-11-28T08:00:00Z")])])
    _, out, _ = follow(source, timeout=3)
    assert "awaiting approval" in out
    assert f"tierlift approve xy-0146 prod --promotion-id {PID}" in out and "expires 2026-11-28T08:00:00Z" in out


def test_live_mode_rewrites_the_current_line() -> None:
    clock = Clock()
    out = io.StringIO()
    source = Script([milestones_from_events([event("Promotion Started", 0)]), [], []])
    follower = Follower(
        source,
        NS,
        PID,
        started=T0,
        timeout=4,
        poll=2,
        out=out,
        live=True,
        clock=clock,
        sleep=clock.sleep,
        now=lambda: T0 + timedelta(seconds=clock.now),
    )
    follower.run()
    text = out.getvalue()
    assert "\r" in text and "restoring          ... 3s" in text


# where the ledger is missing: the recorded state -------------------------------------------------
class FakeLogsMissing:
    def get_paginator(self, name: str) -> FakeLogsMissing:
        return self

    def paginate(self, **kwargs: Any) -> list[Any]:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no"}}, "FilterLogEvents")


class FakeStore:
    """``StateStore.read`` answers in turn: in flight, then ended (``last``)."""

    def __init__(self, answers: list[EnvRecord]) -> None:
        self.answers = answers
        self.reads = 0

    def read(self, ns: Namespace) -> EnvRecord:
        self.reads += 1
        return self.answers[min(self.reads, len(self.answers)) - 1]


def recorded(last: LastOutcome | None = None, **kw: Any) -> EnvRecord:
    return EnvRecord(namespace=NS, state=EnvState(seq=1, last=last), config_path="/tierlift/xy-0146/config", **kw)


def request(request_id: str, **kw: Any) -> Request:
    return Request(request_id, "xy-0146", "prod", "20261127200000", **kw)


def test_without_a_ledger_the_recorded_state_is_followed() -> None:
    from tierlift.follow import StateSource, choose_source

    # The deploy's claim, completed: the promotion is deploying since 07:10.
    claim = DeployEntry(1, "2026-11-28T07:10:00+00:00", owner="req-1", deployment_id="ecs-svc/1")
    in_flight = Promotion(request(PID, started="2026-11-28T07:00:00+00:00"), (claim,))
    assert in_flight.stage == Stage.DEPLOYING
    last = LastOutcome(PID, "20261127200000", Outcome.COMPLETED, None, "2026-11-28T07:14:00+00:00")
    store = FakeStore([recorded(promotion=in_flight), recorded(promotion=None, last=last)])
    source, note = choose_source(FakeLogsMissing(), "/aws/events/tierlift-ledger", store, NS, PID, T0)  # type: ignore[arg-type]
    assert isinstance(source, StateSource) and note is not None and "recorded state" in note
    result, out, _ = follow(source)
    assert result.code == ExitCode.OK and [m.stage for m in result.milestones] == ["deploying", "completed"]
    assert store.reads == 2 and "deploying" in out and "+10m00s" in out


def test_awaiting_approval_and_restoring_in_the_recorded_state() -> None:
    from tierlift.follow import milestones_from_state

    started = request(PID, started="2026-11-28T07:00:00+00:00")
    restoring = recorded(promotion=Promotion(started))
    assert [(m.stage, m.at) for m in milestones_from_state(restoring, PID)] == [("restoring", T0)]
    gate = DeployEntry(1, "2026-11-28T07:05:00+00:00", awaiting=True, expires_at="2026-11-29T07:05:00+00:00")
    awaiting = recorded(promotion=Promotion(started, (gate,)))
    assert [(m.stage, m.at) for m in milestones_from_state(awaiting, PID)] == [
        ("awaiting_approval", T0 + timedelta(minutes=5))
    ]


def test_a_queued_request_in_the_recorded_state() -> None:
    from tierlift.follow import milestones_from_state

    waiting = QueuedRequest(request(PID, requested_at="2026-11-28T07:00:00+00:00"))
    state = recorded(promotion=None, queued=[waiting])
    assert [(m.stage, m.at) for m in milestones_from_state(state, PID)] == [("queued", T0)]
    assert milestones_from_state(state, "someone-else") == []
    # A queue entry the state record has answered no longer waits: it is not followed as queued.
    answered = EnvRecord(
        namespace=NS, state=EnvState(seq=2, answered=(answer_key(PID),)), queued=[waiting], config_path="x"
    )
    assert milestones_from_state(answered, PID) == []
