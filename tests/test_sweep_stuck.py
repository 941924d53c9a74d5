"""Stuck promotions: the sweep reaches the same end state as the lost (or redelivered) event would.

Each case is run twice from the same start, once through the event handler and once through the
sweep, and both must end in the same recorded state, AWS state and tierlift events.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto.cloudformation.models import cloudformation_backends
from moto.ecs.models import ecs_backends

from chalicelib import promotion as promo
from chalicelib.deps import Deps
from chalicelib.names import Namespace, Version
from chalicelib.state import Log, Promotion, Request, Step
from chalicelib.sweep import deployment_outcome, run_sweep
from tests.conftest import take_source_snapshot
from tests.test_sweep import later

V1, V2 = "20261120000000", "20261127200000"
QA = Namespace.parse("xy-0146-qa")
ACCOUNT, REGION = "123456789012", "us-east-1"


def request(deps: Deps, events: Any, version: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
    event = event or events.promotion_requested(tenant="xy-0146", environment="qa", version=version)
    promo.on_promotion_requested(deps, event)
    return event


def stack_event(deps: Deps, events: Any, version: str, status: str) -> None:
    promo.on_stack_status(deps, events.stack_status(QA.stack_name(Version(version)), status))


def deployment_event(deps: Deps, events: Any, outcome: str) -> None:
    record = deps.store.get_promotion(QA)
    assert record is not None and record.deployment_id
    promo.on_deployment_state(deps, events.deployment(record.deployment_id, outcome))


def set_stack_status(version: str, status: str) -> None:
    backend = cloudformation_backends[ACCOUNT][REGION]
    next(s for s in backend.stacks.values() if s.name == QA.stack_name(Version(version))).status = status


def set_rollout(state: str) -> None:
    service = ecs_backends[ACCOUNT][REGION].services["common-nonprod:xy-0146-qa"]
    service.deployments[0]["rolloutState"] = state


OUTCOMES = {"finalizing": "completed", "failed": "failed", "rolled_back": "rolled_back"}


def save_stage(deps: Deps, stage: str, reason: str | None = None) -> None:
    """What a crash leaves behind: the ending claimed (by an invocation that died), the rest not done."""
    record = deps.store.get_promotion(QA)
    assert record is not None
    dead = (deps.clock() - timedelta(hours=1)).isoformat(timespec="seconds")
    claim = Step(
        seq=0,
        stage="ending",
        at=deps.clock().isoformat(timespec="seconds"),
        owner="a-lambda-that-died",
        done=False,
        lease_until=dead,
        outcome=OUTCOMES[stage],
        reason=reason,
    )
    deps.store.append(QA, record.log, claim)


def end_state(deps: Deps, aws: boto3.session.Session, outbox: Any) -> dict[str, Any]:
    record = deps.store.get_promotion(QA)
    service = deps.services.describe_service("common-nonprod", "xy-0146-qa")
    assert service is not None
    task_definition, _ = deps.services.describe_task_definition(service["taskDefinition"])
    env = {e["name"]: e["value"] for e in task_definition["containerDefinitions"][0].get("environment", [])}
    stacks = aws.client("cloudformation").describe_stacks()["Stacks"]
    return {
        "stage": record.stage if record else None,
        "active": str(deps.store.get_active(QA)),
        "stacks": sorted(s["StackName"] for s in stacks if s["StackName"].startswith("xy-0146-qa-db-")),
        "service_version": env.get("TIERLIFT_VERSION"),
        "events": [e["detail-type"] for e in outbox.drain()],
    }


@pytest.fixture
def v1_running(world: dict[str, Any], deps: Deps, aws: boto3.session.Session, outbox: Any, events: Any) -> None:
    """qa runs V1, promoted through the event handlers."""
    take_source_snapshot(aws, V1)
    request(deps, events, V1)
    stack_event(deps, events, V1, "CREATE_COMPLETE")
    deployment_event(deps, events, "COMPLETED")
    assert deps.store.get_promotion(QA) is None and deps.store.get_active(QA) == Version(V1)
    take_source_snapshot(aws, V2)
    outbox.drain()


Setup = Callable[[Deps, Any], dict[str, Any] | None]
Deliver = Callable[[Deps, Any, dict[str, Any] | None], None]


def _restoring(deps: Deps, events: Any) -> dict[str, Any]:
    return request(deps, events, V2)


def _deploying(deps: Deps, events: Any) -> None:
    request(deps, events, V2)
    stack_event(deps, events, V2, "CREATE_COMPLETE")


STACK_V1, STACK_V2 = QA.stack_name(Version(V1)), QA.stack_name(Version(V2))
DEPLOYING = {
    "stage": "deploying",
    "active": V2,
    "stacks": [STACK_V1, STACK_V2],
    "service_version": V2,
    "events": ["Database Ready", "Service Deploying"],
}
FAILED = {"stage": None, "active": V1, "stacks": [STACK_V1], "service_version": V1, "events": ["Promotion Failed"]}
COMPLETED = {
    "stage": None,
    "active": V2,
    "stacks": [STACK_V2],
    "service_version": V2,
    "events": ["Promotion Completed"],
}
ROLLED_BACK = {
    "stage": None,
    "active": V1,
    "stacks": [STACK_V1],
    "service_version": V1,
    "events": ["Promotion Rolled Back"],
}


def case_stack_complete_event_lost(deps: Deps, events: Any) -> Deliver:
    _restoring(deps, events)
    return lambda d, e, _: stack_event(d, e, V2, "CREATE_COMPLETE")


def case_stack_failed_event_lost(deps: Deps, events: Any) -> Deliver:
    _restoring(deps, events)
    set_stack_status(V2, "ROLLBACK_COMPLETE")
    return lambda d, e, _: stack_event(d, e, V2, "ROLLBACK_COMPLETE")


def case_deployment_completed_event_lost(deps: Deps, events: Any) -> Deliver:
    _deploying(deps, events)
    set_rollout("COMPLETED")  # moto leaves every rollout IN_PROGRESS
    return lambda d, e, _: deployment_event(d, e, "COMPLETED")


def case_deployment_failed_event_lost(deps: Deps, events: Any) -> Deliver:
    _deploying(deps, events)
    set_rollout("FAILED")
    return lambda d, e, _: deployment_event(d, e, "FAILED")


def case_crash_while_finalizing(deps: Deps, events: Any) -> Deliver:
    _deploying(deps, events)
    set_rollout("COMPLETED")
    save_stage(deps, "finalizing")
    return lambda d, e, _: deployment_event(d, e, "COMPLETED")  # the redelivered event


def case_crash_while_failing(deps: Deps, events: Any) -> Deliver:
    _restoring(deps, events)
    set_stack_status(V2, "ROLLBACK_COMPLETE")
    save_stage(deps, "failed", "database stack ROLLBACK_COMPLETE")
    return lambda d, e, _: stack_event(d, e, V2, "ROLLBACK_COMPLETE")


def case_crash_while_rolling_back(deps: Deps, events: Any) -> Deliver:
    _deploying(deps, events)
    set_rollout("FAILED")
    save_stage(deps, "rolled_back", "service deployment failed")
    return lambda d, e, _: deployment_event(d, e, "FAILED")


def case_crash_after_taking_the_lock(deps: Deps, events: Any) -> Deliver:
    """The request took the lock and crashed before creating the stack; the event is redelivered."""
    event = events.promotion_requested(tenant="xy-0146", environment="qa", version=V2)
    deps.store.take_lock(
        Request(
            id=event["id"],
            tenant="xy-0146",
            environment="qa",
            version=V2,
            previous=V1,
            requested_at=event["time"],
            started=deps.clock().isoformat(timespec="seconds"),
        )
    )

    def deliver(d: Deps, e: Any, _: Any) -> None:
        request(d, e, V2, event)
        stack_event(d, e, V2, "CREATE_COMPLETE")  # moto finishes at once; AWS would send this next

    return deliver


CASES = [
    (case_stack_complete_event_lost, DEPLOYING),
    (case_stack_failed_event_lost, FAILED),
    (case_deployment_completed_event_lost, COMPLETED),
    (case_deployment_failed_event_lost, ROLLED_BACK),
    (case_crash_while_finalizing, COMPLETED),
    (case_crash_while_failing, FAILED),
    (case_crash_while_rolling_back, ROLLED_BACK),
    (
        case_crash_after_taking_the_lock,
        {**DEPLOYING, "events": ["Promotion Started", "Database Ready", "Service Deploying"]},
    ),
]


@pytest.mark.parametrize("path", ["event", "sweep"])
@pytest.mark.parametrize(("case", "expected"), CASES, ids=[c[0].__name__[5:] for c in CASES])
def test_stuck_promotion_reaches_the_event_paths_end_state(v1_running, deps, aws, outbox, events, case, expected, path):
    deliver = case(deps, events)
    outbox.drain()
    if path == "event":
        deliver(deps, events, None)
    else:
        later(deps, hours=3)
        result = run_sweep(deps)
        [entry] = result.by_kind("reconcile")
        assert entry.status == "done", entry.outcome
        assert result.errors == []
    assert end_state(deps, aws, outbox) == expected


def test_promotion_within_its_timeout_is_left_alone(v1_running, deps, aws, outbox, events, calls):
    _restoring(deps, events)
    outbox.drain()
    later(deps, minutes=110)  # restoring times out after 2 h
    result = run_sweep(deps)
    assert result.by_kind("reconcile") == []
    assert deps.store.get_promotion(QA).stage == "restoring"


def test_stack_still_creating_waits(v1_running, deps, aws, outbox, events):
    _restoring(deps, events)
    set_stack_status(V2, "CREATE_IN_PROGRESS")
    later(deps, hours=3)
    [entry] = run_sweep(deps).by_kind("reconcile")
    assert entry.status == "waiting" and "CREATE_IN_PROGRESS" in entry.outcome
    assert deps.store.get_promotion(QA).stage == "restoring"


def test_deployment_in_progress_waits(v1_running, deps, aws, outbox, events):
    _deploying(deps, events)
    set_rollout("IN_PROGRESS")
    later(deps, hours=3)
    [entry] = run_sweep(deps).by_kind("reconcile")
    assert entry.status == "waiting"
    assert deps.store.get_promotion(QA).stage == "deploying"


def test_dry_run_says_what_reconciling_would_do_and_does_nothing(v1_running, deps, aws, outbox, events, calls):
    _restoring(deps, events)
    outbox.drain()
    calls.calls.clear()
    later(deps, hours=3)
    [entry] = run_sweep(deps, dry_run=True).by_kind("reconcile")
    assert entry.status == "planned" and entry.outcome == "would apply stack status CREATE_COMPLETE"
    assert calls.mutating == [] and outbox.drain() == []
    assert deps.store.get_promotion(QA).stage == "restoring"


def _record() -> Promotion:
    deploying = Step(seq=1, stage="deploying", at="", task_definition="td:2", deployment_id="ecs-svc/2")
    return Promotion(Request("p", "xy-0146", "qa", V2, V1), Log("p", (deploying,)))


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (None, "FAILED"),
        ({"taskDefinition": "td:2", "deployments": [{"id": "ecs-svc/2", "rolloutState": "COMPLETED"}]}, "COMPLETED"),
        ({"taskDefinition": "td:1", "deployments": [{"id": "ecs-svc/2", "rolloutState": "FAILED"}]}, "FAILED"),
        (
            {"taskDefinition": "td:2", "deployments": [{"id": "ecs-svc/2", "rolloutState": "IN_PROGRESS"}]},
            "IN_PROGRESS",
        ),
        ({"taskDefinition": "td:2", "deployments": [{"id": "ecs-svc/3", "rolloutState": "COMPLETED"}]}, "COMPLETED"),
        ({"taskDefinition": "td:1", "deployments": [{"id": "ecs-svc/4", "rolloutState": "COMPLETED"}]}, "FAILED"),
    ],
    ids=["service-gone", "completed", "failed", "in-progress", "gone-new-td-runs", "gone-old-td-runs"],
)
def test_deployment_outcome_from_the_service(service, expected):
    assert deployment_outcome(service, _record())[0] == expected


# --------------------------------------------------------------------------------------------------
# Claims: a live one is someone's work in progress; one cut short by a real crash is finished
# --------------------------------------------------------------------------------------------------
def test_an_ending_claimed_by_a_live_invocation_is_left_to_it(v1_running, deps, aws, outbox, events):
    """A claim whose lease has not run out belongs to a running invocation: the sweep never takes it over."""
    _restoring(deps, events)
    set_stack_status(V2, "ROLLBACK_COMPLETE")
    record = deps.store.get_promotion(QA)
    assert record is not None
    now = deps.clock()
    claim = Step(
        seq=0,
        stage="ending",
        at=now.isoformat(timespec="seconds"),
        owner="a-lambda-still-running",
        done=False,
        lease_until=(now + timedelta(hours=2)).isoformat(timespec="seconds"),
        outcome="failed",
        reason="database stack ROLLBACK_COMPLETE",
    )
    deps.store.append(QA, record.log, claim)
    outbox.drain()
    later(deps, hours=1)  # stuck for the planner (30 min), the lease still live
    [entry] = run_sweep(deps).by_kind("reconcile")
    assert entry.item.reason == "stuck_failed"
    assert entry.status == "waiting", (entry.status, entry.outcome)
    assert outbox.drain() == []
    after = deps.store.get_promotion(QA)
    assert after is not None and after.log == deps.store.read_log(QA, record.id) and after.claim is not None
    assert after.claim.owner == "a-lambda-still-running"
    assert STACK_V2 in end_state(deps, aws, outbox)["stacks"]
    later(deps, hours=3)  # the lease ran out: its owner is dead, the sweep finishes the ending it claimed
    [entry] = run_sweep(deps).by_kind("reconcile")
    assert entry.status == "done"
    assert end_state(deps, aws, outbox) == FAILED


def _cancel_command(events: Any, promotion_id: str) -> dict[str, Any]:
    event = events.promotion_requested(
        tenant="xy-0146", environment="qa", promotion_id=promotion_id, command="cancel", requested_by="alice"
    )
    event["detail-type"] = "Promotion Cancelled"
    return event


CANCELLED = {
    "stage": None,
    "active": V1,
    "stacks": [STACK_V1],
    "service_version": V1,
    "events": ["Promotion Cancelled"],
}
# The cancel's state-changing calls: 1 the ending claim, 2 DeleteStack, 3 PutEvents, 4 ``last``, 5 the
# lock. A crash before 1 leaves no trace (the cancel is simply lost); one before 4 is the documented
# window where the terminal event may be put twice (tests/test_crash_safety.py).
CANCEL_CRASH_POINTS = [2, 3, 5]


@pytest.mark.parametrize(
    "path",
    [
        "retry",
        "sweep",
    ],
)
@pytest.mark.parametrize("k", CANCEL_CRASH_POINTS)
def test_a_cancel_cut_short_by_a_crash_is_finished_once(v1_running, pipeline, deps, aws, outbox, events, k, path):
    from tests.test_crash_safety import Crash, arm, disarm

    pid = request(deps, events, V2)["id"]
    outbox.drain()
    command = _cancel_command(events, pid)
    hook = arm(deps, k)
    try:
        with pytest.raises(Crash):
            pipeline.invoke("promotion_cancelled", command, "cancel-1")
    finally:
        disarm(deps, hook)
    record = deps.store.get_promotion(QA)
    assert record is not None and record.stage == "cancelled" and record.claim is not None
    if path == "retry":
        pipeline.invoke("promotion_cancelled", command, "cancel-1")  # Lambda's retry: the same request id
    else:
        later(deps, hours=1)
        [entry] = run_sweep(deps).by_kind("reconcile")
        assert (entry.item.reason, entry.status) == ("stuck_cancelled", "done"), entry.outcome
    assert end_state(deps, aws, outbox) == CANCELLED
    last = deps.store.recorded(QA).last
    assert last is not None and (last.promotion_id, last.outcome) == (pid, "cancelled")
