"""Stuck promotions: the sweep reaches the same end state as the lost (or retried) event would.

Each case is run twice from the same start, once through the event handler and once through the
sweep, and both must end in the same recorded state, AWS state and tierlift events. The starts are
made by the pipeline: promotions fed their events through the handlers, and crashes are real ones (the
handler killed just before its k-th state-changing AWS call, as tests/test_crash_safety.py does), so
the claims they leave carry their owner's invocation id and lease.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from moto.cloudformation.models import cloudformation_backends
from moto.ecs.models import ecs_backends

from chalicelib.deps import Deps
from chalicelib.domain.model import DeployEntry, Outcome, Promotion, Request, Stage
from chalicelib.domain.names import Namespace, Version
from chalicelib.usecases.sweep import deployment_outcome
from tests.conftest import take_source_snapshot
from tests.flow import Pipeline
from tests.test_crash_safety import Crash, arm, disarm
from tests.test_sweep import later, make_stack, sweep

V1, V2 = "20261120000000", "20261127200000"
QA = Namespace.parse("xy-0146-qa")
ACCOUNT, REGION = "123456789012", "us-east-1"
DIED = "a-lambda-that-died"


def request_event(p: Pipeline, version: str) -> dict[str, Any]:
    return p.events.promotion_requested(tenant="xy-0146", environment="qa", version=version)


def stack_event(p: Pipeline, version: str, status: str) -> dict[str, Any]:
    return p.events.stack_status(QA.stack_name(Version(version)), status)


def deployment_event(p: Pipeline, outcome: str) -> dict[str, Any]:
    promotion = p.promotion()
    assert promotion is not None and promotion.deployment_id
    return p.events.deployment(promotion.deployment_id, outcome)


def crash(p: Pipeline, handler: str, event: dict[str, Any], k: int, request_id: str = DIED) -> None:
    """Deliver ``event`` as invocation ``request_id`` and kill it just before its k-th state-changing call."""
    hook = arm(p.deps, k)
    try:
        with pytest.raises(Crash):
            p.invoke(handler, event, request_id)
    finally:
        disarm(p.deps, hook)


def set_stack_status(version: str, status: str) -> None:
    backend = cloudformation_backends[ACCOUNT][REGION]
    name = QA.stack_name(Version(version))
    next(s for s in backend.stacks.values() if s.name == name and s.status != "DELETE_COMPLETE").status = status


def set_rollout(state: str) -> None:
    service = ecs_backends[ACCOUNT][REGION].services["common-nonprod:xy-0146-qa"]
    service.deployments[0]["rolloutState"] = state


def end_state(deps: Deps, aws: boto3.session.Session, outbox: Any) -> dict[str, Any]:
    rec = deps.store.read(QA)
    service = deps.services.describe_service("common-nonprod", "xy-0146-qa")
    assert service is not None
    task_definition, _ = deps.services.describe_task_definition(service["taskDefinition"])
    env = {e["name"]: e["value"] for e in task_definition["containerDefinitions"][0].get("environment", [])}
    stacks = aws.client("cloudformation").describe_stacks()["Stacks"]
    return {
        "stage": rec.promotion.stage if rec.promotion else None,
        "active": str(rec.active),
        "stacks": sorted(
            s["StackName"]
            for s in stacks
            if s["StackName"].startswith("xy-0146-qa-db-") and s["StackStatus"] != "DELETE_COMPLETE"
        ),
        "service_version": env.get("TIERLIFT_VERSION"),
        "events": [e["detail-type"] for e in outbox.drain()],
    }


@pytest.fixture
def v1_running(pipeline: Pipeline, aws: boto3.session.Session, outbox: Any) -> Pipeline:
    """qa runs V1, promoted through the event handlers; V2's source snapshot is there."""
    take_source_snapshot(aws, V1)
    pipeline.promote(V1)
    assert pipeline.promotion() is None and pipeline.active() == V1
    take_source_snapshot(aws, V2)
    outbox.drain()
    return pipeline


Deliver = Callable[[Pipeline], Any]


def _restoring(p: Pipeline) -> None:
    assert p.request("qa", V2)["action"] == "start"


def _deploying(p: Pipeline) -> None:
    _restoring(p)
    assert p.stack_event(V2, "CREATE_COMPLETE")["action"] == "deploy"


STACK_V1, STACK_V2 = QA.stack_name(Version(V1)), QA.stack_name(Version(V2))
DEPLOYING = {
    "stage": Stage.DEPLOYING,
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


def case_stack_complete_event_lost(p: Pipeline) -> Deliver:
    _restoring(p)
    return lambda q: q.stack_event(V2, "CREATE_COMPLETE")


def case_stack_failed_event_lost(p: Pipeline) -> Deliver:
    _restoring(p)
    set_stack_status(V2, "ROLLBACK_COMPLETE")
    return lambda q: q.stack_event(V2, "ROLLBACK_COMPLETE")


def case_deployment_completed_event_lost(p: Pipeline) -> Deliver:
    _deploying(p)
    set_rollout("COMPLETED")  # moto leaves every rollout IN_PROGRESS
    return lambda q: q.deployment_event("COMPLETED")


def case_deployment_failed_event_lost(p: Pipeline) -> Deliver:
    _deploying(p)
    set_rollout("FAILED")
    return lambda q: q.deployment_event("FAILED")


def _crashed_after_claiming(p: Pipeline, handler: str, event: dict[str, Any]) -> Deliver:
    """The handler claimed the ending (its first state-changing call) and died before its next one;
    the event path is Lambda's retry of that invocation (the same request id)."""
    crash(p, handler, event, 2)
    promotion = p.promotion()
    assert promotion is not None and promotion.stage is Stage.ENDING and promotion.ending is not None
    assert promotion.ending.owner == DIED
    return lambda q: q.invoke(handler, event, DIED)


def case_crash_while_completing(p: Pipeline) -> Deliver:
    _deploying(p)
    set_rollout("COMPLETED")
    return _crashed_after_claiming(p, "deployment_state", deployment_event(p, "COMPLETED"))


def case_crash_while_failing(p: Pipeline) -> Deliver:
    _restoring(p)
    set_stack_status(V2, "ROLLBACK_COMPLETE")
    return _crashed_after_claiming(p, "stack_status", stack_event(p, V2, "ROLLBACK_COMPLETE"))


def case_crash_while_rolling_back(p: Pipeline) -> Deliver:
    _deploying(p)
    set_rollout("FAILED")
    return _crashed_after_claiming(p, "deployment_state", deployment_event(p, "FAILED"))


def case_crash_after_taking_the_lock(p: Pipeline) -> Deliver:
    """The request took the lock (its first state-changing call) and died before creating the stack."""
    event = request_event(p, V2)
    crash(p, "promotion_requested", event, 2)
    promotion = p.promotion()
    assert promotion is not None and promotion.request.owner == DIED and promotion.deploys == ()
    assert STACK_V2 not in end_state(p.deps, p.session, p.outbox)["stacks"]

    def deliver(q: Pipeline) -> None:
        assert q.invoke("promotion_requested", event, DIED)["action"] == "start"  # Lambda's retry
        q.stack_event(V2, "CREATE_COMPLETE")  # moto finishes at once; AWS would send this next

    return deliver


def case_a_stack_delete_a_parked_promotion_waits_for_was_not_reported(p: Pipeline) -> Deliver:
    """An earlier stack of V2 (tierlift's) is still being deleted: the request parks until its
    ``DELETE_COMPLETE``; the delete finishes and that event is lost."""
    old = make_stack(p.deps, p.session, QA, V2)
    set_stack_status(V2, "DELETE_IN_PROGRESS")
    assert p.request("qa", V2)["action"] == "wait"
    assert p.parked() == old
    p.session.client("cloudformation").delete_stack(StackName=old)
    assert old not in end_state(p.deps, p.session, p.outbox)["stacks"]

    def deliver(q: Pipeline) -> None:
        assert q.stack_event(V2, "DELETE_COMPLETE")["action"] == "admit"
        q.stack_event(V2, "CREATE_COMPLETE")

    return deliver


CASES = [
    (case_stack_complete_event_lost, DEPLOYING),
    (case_stack_failed_event_lost, FAILED),
    (case_deployment_completed_event_lost, COMPLETED),
    (case_deployment_failed_event_lost, ROLLED_BACK),
    (case_crash_while_completing, COMPLETED),
    (case_crash_while_failing, FAILED),
    (case_crash_while_rolling_back, ROLLED_BACK),
    (
        case_crash_after_taking_the_lock,
        {**DEPLOYING, "events": ["Promotion Started", "Database Ready", "Service Deploying"]},
    ),
    (
        case_a_stack_delete_a_parked_promotion_waits_for_was_not_reported,
        {**DEPLOYING, "events": ["Promotion Started", "Database Ready", "Service Deploying"]},
    ),
]


@pytest.mark.parametrize("path", ["event", "sweep"])
@pytest.mark.parametrize(("case", "expected"), CASES, ids=[c[0].__name__[5:] for c in CASES])
def test_stuck_promotion_reaches_the_event_paths_end_state(v1_running, deps, aws, outbox, case, expected, path):
    deliver = case(v1_running)
    outbox.drain()
    if path == "event":
        deliver(v1_running)
    else:
        later(deps, hours=3)
        result = sweep(deps)
        [entry] = result.by_kind("reconcile")
        assert entry.status == "done", entry.outcome
        assert result.errors == []
    assert end_state(deps, aws, outbox) == expected
    assert deps.store.waiting() == []


def test_promotion_within_its_timeout_is_left_alone(v1_running, deps, aws, outbox):
    _restoring(v1_running)
    outbox.drain()
    later(deps, minutes=110)  # restoring times out after 2 h
    result = sweep(deps)
    assert result.by_kind("reconcile") == [] and result.kept["promotion_progressing"] == 1
    assert v1_running.promotion().stage is Stage.RESTORING


def test_stack_still_creating_waits(v1_running, deps, aws, outbox):
    _restoring(v1_running)
    set_stack_status(V2, "CREATE_IN_PROGRESS")
    later(deps, hours=3)
    [entry] = sweep(deps).by_kind("reconcile")
    assert entry.status == "waiting" and "CREATE_IN_PROGRESS" in entry.outcome
    assert v1_running.promotion().stage is Stage.RESTORING


def test_deployment_in_progress_waits(v1_running, deps, aws, outbox):
    _deploying(v1_running)
    set_rollout("IN_PROGRESS")
    later(deps, hours=3)
    [entry] = sweep(deps).by_kind("reconcile")
    assert entry.status == "waiting"
    assert v1_running.promotion().stage is Stage.DEPLOYING


def test_dry_run_says_what_reconciling_would_do_and_does_nothing(v1_running, deps, aws, outbox, calls):
    _restoring(v1_running)
    outbox.drain()
    before = deps.store.parameters.list(deps.store.root)
    calls.calls.clear()
    later(deps, hours=3)
    [entry] = sweep(deps, dry_run=True).by_kind("reconcile")
    assert entry.status == "planned" and entry.outcome == "would apply stack status CREATE_COMPLETE"
    assert calls.mutating == [] and outbox.drain() == []
    assert deps.store.parameters.list(deps.store.root) == before
    assert v1_running.promotion().stage is Stage.RESTORING


def _record() -> Promotion:
    deploying = DeployEntry(n=1, at="", task_definition="td:2", deployment_id="ecs-svc/2")
    return Promotion(Request("p", "xy-0146", "qa", V2, V1), (deploying,))


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
def test_an_ending_claimed_by_a_live_invocation_is_left_to_it(v1_running, deps, aws, outbox):
    """A claim whose lease has not run out belongs to a running invocation: the sweep never takes it over.

    With the default timeouts a stuck ending is always past its lease (30 min against 16); an operator
    may shorten the timeout, and the lease still holds."""
    p = v1_running
    deps.settings = deps.settings._replace(stage_timeouts={**deps.settings.stage_timeouts, "ending": 300})
    _restoring(p)
    set_stack_status(V2, "ROLLBACK_COMPLETE")
    crash(p, "stack_status", stack_event(p, V2, "ROLLBACK_COMPLETE"), 2, "a-lambda-still-running")
    outbox.drain()
    later(deps, minutes=10)  # stuck for the planner (5 min), the lease (16 min) still live
    [entry] = sweep(deps).by_kind("reconcile")
    assert entry.item.reason == "stuck_ending"
    assert entry.status == "waiting", (entry.status, entry.outcome)
    assert outbox.drain() == []
    after = p.promotion()
    assert after is not None and after.ending is not None and after.ending.owner == "a-lambda-still-running"
    assert STACK_V2 in end_state(deps, aws, outbox)["stacks"]
    later(deps, hours=3)  # the lease ran out: its owner is dead, the sweep finishes the ending it claimed
    [entry] = sweep(deps).by_kind("reconcile")
    assert entry.status == "done"
    assert end_state(deps, aws, outbox) == FAILED


def test_a_start_whose_owner_may_still_run_is_left_to_it(v1_running, deps, aws, outbox):
    """A lock taken by an invocation that has not created the stack yet: within the lock's lease (16 min)
    the sweep waits, even past the ``requested`` timeout (15 min); after it, it starts the promotion."""
    p = v1_running
    crash(p, "promotion_requested", request_event(p, V2), 2, "a-lambda-still-running")
    outbox.drain()
    later(deps, minutes=15.5)
    [entry] = sweep(deps).by_kind("reconcile")
    assert (entry.item.reason, entry.status) == ("stuck_requested", "waiting"), entry.outcome
    assert "a-lambda-still-running" in entry.outcome and STACK_V2 not in end_state(deps, aws, outbox)["stacks"]
    later(deps, hours=1)
    [entry] = sweep(deps).by_kind("reconcile")
    assert (entry.status, entry.outcome) == ("done", "request: start; stack CREATE_COMPLETE: deploy")
    assert end_state(deps, aws, outbox) == {
        **DEPLOYING,
        "events": ["Promotion Started", "Database Ready", "Service Deploying"],
    }


@pytest.mark.parametrize("late", ["before", "after"])
def test_the_sweep_and_the_late_event_racing_end_the_promotion_once(v1_running, deps, aws, outbox, late):
    """The deployment's event comes hours late, just as the sweep reconciles the promotion: delivered
    right before the sweep claims the ending, or right after. One ending, one terminal event."""
    p = v1_running
    _deploying(p)
    set_rollout("COMPLETED")
    event = deployment_event(p, "COMPLETED")
    outbox.drain()
    later(deps, hours=3)
    answers: list[dict[str, Any]] = []
    fired, claimed = [], []

    def deliver_late(model: Any, params: Any = None, **_: Any) -> None:
        if fired:
            return
        name = str(params.get("Name", "")) if isinstance(params, dict) else ""
        is_claim = model.name == "PutParameter" and "/state/" in name
        if late == "after" and not claimed:
            claimed.extend([True] if is_claim else [])
            return
        if late == "before" and not is_claim:
            return
        fired.append(True)  # the late event's own calls pass through here too
        answers.append(p.invoke("deployment_state", event))

    client = deps.store.parameters.client
    client.meta.events.register("before-parameter-build.ssm.*", deliver_late)
    try:
        result = sweep(deps)
    finally:
        client.meta.events.unregister("before-parameter-build.ssm.*", deliver_late)
    [entry] = result.by_kind("reconcile")
    if late == "before":  # the event ended it; the sweep's claim found the ending taken
        assert answers[0]["action"] == "complete" and entry.status == "waiting", entry.outcome
    else:  # the sweep claimed it; the event found a live claim and left it to the sweep
        assert answers[0]["action"] == "ignore" and entry.status == "done", entry.outcome
    assert end_state(deps, aws, outbox) == COMPLETED
    last = deps.store.read(QA).last
    assert last is not None and last.outcome == Outcome.COMPLETED


def _cancel_command(p: Pipeline, promotion_id: str) -> dict[str, Any]:
    event = p.events.promotion_requested(
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
# The cancel's state-changing calls: 1 the ending's claim (the next state record), 2 DeleteStack, 3
# PutEvents, 4 the DeleteParameters that releases the lock. A crash before 1 leaves no trace (the cancel
# is simply lost); one before 4 is the documented window where the terminal event is put twice
# (docs/contract.md; consumers dedupe on promotion_id + detail-type).
CANCEL_CRASH_POINTS = [2, 3, 4]


@pytest.mark.parametrize("path", ["retry", "sweep"])
@pytest.mark.parametrize("k", CANCEL_CRASH_POINTS)
def test_a_cancel_cut_short_by_a_crash_is_finished_once(v1_running, deps, aws, outbox, k, path):
    p = v1_running
    pid = p.request("qa", V2)["event"]["id"]
    outbox.drain()
    command = _cancel_command(p, pid)
    crash(p, "promotion_cancelled", command, k, "cancel-1")
    promotion = p.promotion()
    assert promotion is not None and promotion.stage is Stage.ENDING and promotion.ending is not None
    assert (promotion.ending.outcome, promotion.ending.owner) == ("cancelled", "cancel-1")
    if path == "retry":
        p.invoke("promotion_cancelled", command, "cancel-1")  # Lambda's retry: the same request id
    else:
        later(deps, hours=1)
        [entry] = sweep(deps).by_kind("reconcile")
        assert (entry.item.reason, entry.status) == ("stuck_ending", "done"), entry.outcome
    expected = {**CANCELLED, "events": ["Promotion Cancelled"] * (2 if k == 4 else 1)}
    assert end_state(deps, aws, outbox) == expected
    last = deps.store.read(QA).last
    assert last is not None and (last.promotion_id, last.outcome) == (pid, "cancelled")
