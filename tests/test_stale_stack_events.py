"""A stale status event of an earlier stack with the same name never ends a later promotion of that version.

Version V2's first request (A) fails: its DB stack rolls back, the pipeline deletes it. V2 is requested
again (B) while that stack is still ``DELETE_IN_PROGRESS``: B takes the lock and waits for the delete.
Then A's stack's status is delivered once more (EventBridge delivers at least once, and late). For every
status the rule listens to, replayed at every stage of B (waiting for the delete, restoring, deploying,
ending) and raced under the deterministic scheduler against B's own next event, each request must end
with exactly one terminal event, the right one: A ``Promotion Failed``, B ``Promotion Completed``.

The stale events carry A's stack id and no ``client-request-token`` (AWS's documented samples send an
empty one): the weakest evidence, so the stack's own ``tierlift:promotion`` tag has to decide.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from moto.cloudformation.models import cloudformation_backends

from chalicelib.domain.model import Stage
from tests.interleave import Scheduler, explore, run_on
from tests.test_interleavings import TERMINAL, V2, CachedSession, LockGuard, World, check_invariants

STATUSES = ["CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_COMPLETE", "DELETE_COMPLETE"]
STAGES = ["waiting", "restoring", "deploying", "ending"]
# Schedules per (status, stage) in the suite; `make interleavings` explores every one (bound 2).
BOUND = int(os.environ.get("TIERLIFT_INTERLEAVING_BOUND", "1"))
LIMIT = int(os.environ.get("TIERLIFT_STALE_LIMIT", "3"))


class SlowDeletes:
    """CloudFormation deletes asynchronously; moto at once. Held deletes stay DELETE_IN_PROGRESS."""

    def __init__(self, pipeline: Any) -> None:
        self.backend = cloudformation_backends["123456789012"]["us-east-1"]
        self.held: list[str] = []
        self._real = pipeline.deps.stacks.delete
        pipeline.deps.stacks.delete = self.delete

    def delete(self, name: str) -> None:
        stack = next(s for s in self.backend.stacks.values() if s.name == name and s.status != "DELETE_COMPLETE")
        stack.status = "DELETE_IN_PROGRESS"
        self.held.append(name)

    def set_status(self, name: str, status: str) -> None:
        stack = next(s for s in self.backend.stacks.values() if s.name == name and s.status != "DELETE_COMPLETE")
        stack.status = status

    def finish(self, session: Any, name: str) -> None:
        """The held delete completes (as CloudFormation's would)."""
        self.held.remove(name)
        session.client("cloudformation").delete_stack(StackName=name)

    def restore(self, pipeline: Any) -> None:
        pipeline.deps.stacks.delete = self._real


def assert_waits(world: World, stack: str) -> None:
    """B holds the lock, has no stack of its own and waits (on the waiting list) for ``stack``'s delete."""
    promotion = world.promotion()
    assert promotion is not None and promotion.id == world.requests["b"]["id"], promotion
    assert not promotion.deploys and promotion.ending is None, promotion
    waiting = [w for w in world.p.deps.store.waiting() if w.promotion_id == promotion.id]
    assert [w.stack for w in waiting] == [stack], waiting


def _stack_id(session: Any, name: str) -> str:
    stacks = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    return str(next(s["StackId"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"))


def _lead_to(world: World, slow: SlowDeletes, session: Any, status: str, stage: str) -> list[tuple[str, Any]]:
    """A fails and its stack is being deleted; B of the same version is at ``stage``. Returns the racers:
    the stale event of A's stack, and (except while waiting) B's own next event."""
    p = world.p
    name = f"{world.tenant}-qa-db-{V2}"
    world.request(V2, "a")
    a_stack = _stack_id(session, name)
    slow.set_status(name, "ROLLBACK_COMPLETE")  # A's restore fails (moto creates every stack at once)
    world.stack(V2, "ROLLBACK_COMPLETE")  # A fails; the pipeline deletes its stack (held: DELETE_IN_PROGRESS)
    assert slow.held == [name]
    world.request(V2, "b")
    assert_waits(world, name)
    stale = p.events.stack_status(name, status, "replayed", stack_id=a_stack)

    def deliver(handler: str, event: dict[str, Any], request_id: str) -> Any:
        return lambda: p.invoke(handler, event, request_id)

    racers = [("stale", deliver("stack_status", stale, "inv-stale"))]
    if stage == "waiting":
        return racers
    slow.finish(session, name)
    done = p.events.stack_status(name, "DELETE_COMPLETE", stack_id=a_stack)
    if stage == "restoring":  # A's stack's delete completes: B restores now
        return [*racers, ("B", deliver("stack_status", done, "inv-B"))]
    world.p.invoke("stack_status", done)
    assert world.promotion().stage is Stage.RESTORING
    if stage == "deploying":  # B's stack is created: B deploys now
        return [*racers, ("B", deliver("stack_status", world.stack_event(V2), "inv-B"))]
    world.stack(V2)
    assert world.promotion().stage is Stage.DEPLOYING
    return [*racers, ("B", deliver("deployment_state", world.deployment_event("COMPLETED"), "inv-B"))]


def _outcomes(world: World) -> dict[str, list[str]]:
    events = [e for e in world.p.outbox.seen if e["detail"].get("tenant") == world.tenant]
    out: dict[str, list[str]] = {}
    for key, request in world.requests.items():
        out[key] = [
            e["detail-type"]
            for e in events
            if e["detail-type"] in TERMINAL and e["detail"]["promotion_id"] == request["id"]
        ]
    return out


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("status", STATUSES)
def test_a_stale_event_of_the_deleted_stack_never_ends_the_new_request(pipeline, status, stage):
    guard = LockGuard()
    for operation in ("DeleteParameter", "DeleteParameters"):
        pipeline.deps.store.parameters.client.meta.events.register(f"before-parameter-build.ssm.{operation}", guard)
    session = CachedSession(pipeline.session)
    gen = explore(BOUND, LIMIT)
    prefix = next(gen)
    runs = 0
    ran: set[str] = set()
    while True:
        world = World(pipeline, session)
        slow = SlowDeletes(pipeline)
        try:
            racers = _lead_to(world, slow, pipeline.session, status, stage)
            scheduler = Scheduler(prefix)
            workers = run_on(pipeline, scheduler, racers)
            for worker in workers:
                assert worker.error is None or type(worker.error).__name__ == "NotYet", (worker.name, worker.error)
            if stage == "waiting":
                assert_waits(world, f"{world.tenant}-qa-db-{V2}")
                slow.finish(pipeline.session, f"{world.tenant}-qa-db-{V2}")
                done = pipeline.events.stack_status(f"{world.tenant}-qa-db-{V2}", "DELETE_COMPLETE")
                pipeline.invoke("stack_status", done)
        finally:
            slow.restore(pipeline)
        pipeline.outbox.drain()
        world.drive_to_end()
        pipeline.outbox.drain()
        outcomes = _outcomes(world)
        assert outcomes["a"] == ["Promotion Failed"], outcomes
        assert outcomes["b"] == ["Promotion Completed"], outcomes
        assert world.p.deps.store.get_active(world.ns).value == V2
        check_invariants(world, guard, ran)
        runs += 1
        try:
            prefix = gen.send(scheduler.decisions)
        except StopIteration:
            break
    assert runs >= 1


def test_a_stale_event_carrying_another_promotions_token_is_ignored_without_a_call(pipeline, calls):
    """With the event's ``client-request-token`` (as CloudFormation sends for CreateStack's statuses), the
    attribution needs no describe at all."""
    session = CachedSession(pipeline.session)
    world = World(pipeline, session)
    slow = SlowDeletes(pipeline)
    try:
        name = f"{world.tenant}-qa-db-{V2}"
        world.request(V2, "a")
        a_stack = _stack_id(pipeline.session, name)
        slow.set_status(name, "ROLLBACK_COMPLETE")
        world.stack(V2, "ROLLBACK_COMPLETE")
        world.request(V2, "b")
        stale = pipeline.events.stack_status(name, "ROLLBACK_COMPLETE", stack_id=a_stack)
        stale["detail"]["client-request-token"] = world.requests["a"]["id"]
        before = len(calls.calls)
        result = pipeline.invoke("stack_status", stale)
    finally:
        slow.restore(pipeline)
    assert result["action"] == "ignore" and "did not create" in result["reason"], result
    assert [op for _, op in calls.calls[before:] if op == "DescribeStacks"] == []
    assert_waits(world, name)
