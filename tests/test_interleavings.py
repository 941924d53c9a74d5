"""Two invocations racing on one environment, in every interleaving of their state reads and writes.

For each scenario a fresh tenant is brought to the racing point through the real handlers; then two
invocations (duplicates of one event, or conflicting events, or an event and the sweep) run under
:class:`tests.interleave.Scheduler`, once per interleaving that :func:`tests.interleave.explore` yields
(every schedule with at most ``BOUND`` preemptions). After each, the scenario is driven to its end and
the invariants are checked:

* the lock is only ever deleted by the invocation holding the promotion's ending claim (checked at the
  moment of the delete);
* every request ends exactly once, with exactly one terminal event, and none that started is rejected;
* at most one task definition is registered per promotion;
* ``active`` names a version whose DB stack exists, and nothing is left locked or queued.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from moto.ssm.models import ssm_backends

from chalicelib.deps import utcnow
from chalicelib.domain.events import TERMINAL_EVENTS
from chalicelib.domain.model import EnvState, Request, Stage
from chalicelib.domain.names import Tenant, Version
from chalicelib.invocation import current_id
from chalicelib.usecases.sweep import run_sweep
from tests.conftest import take_source_snapshot
from tests.interleave import Scheduler, explore, run_on
from tierlift.world import bootstrap_tenant

V1, V2, V3, V4 = "20261120093000", "20261127200000", "20261128010000", "20261128020000"
TERMINAL = TERMINAL_EVENTS
# `make interleavings` explores every schedule with up to 2 preemptions; the suite runs a seeded
# sample of those with 1 (each run builds a fresh tenant through the handlers, ~0.5 s).
BOUND = int(os.environ.get("TIERLIFT_INTERLEAVING_BOUND", "1"))
LIMIT = int(os.environ.get("TIERLIFT_INTERLEAVING_LIMIT", "8"))
_tenants = itertools.count(1)


class CachedSession:
    """A boto3 session whose clients are made once (making a client costs more than a moto call)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service)
        return self._clients[service]


class World:
    """One fresh tenant in the shared moto account, driven through the real handlers."""

    def __init__(self, pipeline: Any, session: CachedSession) -> None:
        self.p = pipeline
        self.tenant = f"il-{next(_tenants):04d}"
        bootstrap_tenant(session, self.tenant)  # type: ignore[arg-type]
        for version in (V1, V2, V3, V4):
            take_source_snapshot(session, version, self.tenant)  # type: ignore[arg-type]
        self.requests: dict[str, dict[str, Any]] = {}
        self.request(V1, key="setup")
        self.stack(V1)
        self.deployment("COMPLETED")

    # events -----------------------------------------------------------------------------------
    def request_event(self, version: str, key: str) -> dict[str, Any]:
        event = self.p.events.promotion_requested(tenant=self.tenant, environment="qa", version=version)
        self.requests[key] = event
        return event

    def request(self, version: str, key: str) -> Any:
        return self.p.invoke("promotion_requested", self.request_event(version, key))

    def stack_event(self, version: str, status: str = "CREATE_COMPLETE") -> dict[str, Any]:
        return self.p.events.stack_status(f"{self.tenant}-qa-db-{version}", status)

    def stack(self, version: str, status: str = "CREATE_COMPLETE") -> Any:
        return self.p.invoke("stack_status", self.stack_event(version, status))

    def deployment_event(self, outcome: str) -> dict[str, Any]:
        promotion = self.promotion()
        assert promotion is not None and promotion.deployment_id
        return self.p.events.deployment(
            promotion.deployment_id, outcome, cluster="common-nonprod", service=f"{self.tenant}-qa"
        )

    def deployment(self, outcome: str) -> Any:
        return self.p.invoke("deployment_state", self.deployment_event(outcome))

    # state ------------------------------------------------------------------------------------
    @property
    def ns(self) -> Any:
        return Tenant.parse(self.tenant).namespace("qa")

    def promotion(self) -> Any:
        return self.p.deps.store.get_promotion(self.ns)

    def drive_to_end(self) -> None:
        """Deliver what AWS would send next until nothing is in flight."""
        for _ in range(12):
            promotion = self.promotion()
            if promotion is None:
                return
            if promotion.stage in (Stage.REQUESTED, Stage.RESTORING):
                self.stack(promotion.version.value)
            elif promotion.stage is Stage.DEPLOYING and promotion.deployment_id:
                self.deployment("COMPLETED")
            else:
                raise AssertionError(f"stuck in {promotion.stage}: {promotion.deploys} {promotion.ending}")
        raise AssertionError("the scenario never settled")


def _backend_value(name: str) -> str | None:
    try:
        return ssm_backends["123456789012"]["us-east-1"].get_parameter(name).value
    except Exception:
        return None


def _ending_of(env_path: str, request_id: str) -> EnvState | None:
    """The newest ending claim (state record) of ``request_id`` in the environment, if any."""
    newest = None
    for attempt in range(1, 10):
        value = _backend_value(f"{env_path}/state/{request_id}.{attempt}")
        if value is None:
            break
        newest = EnvState.from_json(value)
    return newest


class LockGuard:
    """Fails the run if the lock is deleted by anyone but the holder of its ending claim (or, giving back a
    lock it took a moment ago and has not used, the lock's own taker)."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def __call__(self, model: Any, params: Any = None, **_: Any) -> None:
        names = [params.get("Name")] if model.name == "DeleteParameter" else list(params.get("Names", []))
        for name in names:
            if not str(name or "").endswith("/promotion"):
                continue
            text = _backend_value(name)
            if text is None:
                continue
            holder = Request.from_json(text)
            ending = _ending_of(name.rsplit("/", 1)[0], holder.id)
            me = current_id()
            if ending is not None and ending.owner == me:
                continue
            if ending is None and holder.owner == me:
                continue
            self.violations.append(f"{me} deleted the lock of {holder.id} (ending {ending})")


def check_invariants(world: World, guard: LockGuard, ran: set[str]) -> None:
    assert guard.violations == []
    store = world.p.deps.store
    rec = store.recorded(world.ns)
    assert rec.promotion is None, "a promotion is still in flight"
    assert rec.waiting == [], "a request still waits"
    events = [e for e in world.p.outbox.seen if e["detail"].get("tenant") == world.tenant]
    terminal = Counter(e["detail"]["promotion_id"] for e in events if e["detail-type"] in TERMINAL)
    started = {e["detail"]["promotion_id"] for e in events if e["detail-type"] == "Promotion Started"}
    rejected = {e["detail"]["promotion_id"] for e in events if e["detail-type"] == "Promotion Rejected"}
    for key, event in world.requests.items():
        assert terminal[event["id"]] == 1, (key, terminal[event["id"]], [e["detail-type"] for e in events])
    assert not (started & rejected), f"rejected after starting: {started & rejected}"
    ran.update(started)
    ecs = world.p.session.client("ecs")
    arns = ecs.list_task_definitions(familyPrefix=f"{world.tenant}-qa")["taskDefinitionArns"]
    owners = Counter()
    for arn in arns:
        tags = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"]).get("tags", [])
        owner = next((t["value"] for t in tags if t["key"] == "tierlift:promotion"), None)
        if owner:
            owners[owner] += 1
    assert all(n == 1 for n in owners.values()), owners
    active = store.get_active(world.ns)
    assert active is not None
    live = world.p.deps.stacks.describe(world.ns.stack_name(active))
    assert live is not None and live["StackStatus"] == "CREATE_COMPLETE", f"active {active} has no stack"
    assert store.get_db(world.ns, active) is not None


def _sweep(pipeline: Any) -> Any:
    def body() -> Any:
        from chalicelib.invocation import invocation

        with invocation("sweep-run"):
            return run_sweep(pipeline.deps, pipeline_tenant[0])

    return body


pipeline_tenant: list[str] = [""]


def scenario(world: World, name: str) -> list[tuple[str, Any]]:
    """Lead the world to the racing point; return the two racing bodies."""
    p = world.p

    def deliver(handler: str, event: dict[str, Any], request_id: str) -> Any:
        return lambda: p.invoke(handler, event, request_id)

    if name == "duplicate_request":
        event = world.request_event(V2, "a")
        return [
            ("A", deliver("promotion_requested", event, "inv-A")),
            ("B", deliver("promotion_requested", event, "inv-B")),
        ]
    if name == "two_requests":
        a, b = world.request_event(V2, "a"), world.request_event(V3, "b")
        return [("A", deliver("promotion_requested", a, "inv-A")), ("B", deliver("promotion_requested", b, "inv-B"))]
    if name == "duplicate_create_complete":
        world.request(V2, "a")
        event = world.stack_event(V2)
        return [("A", deliver("stack_status", event, "inv-A")), ("B", deliver("stack_status", event, "inv-B"))]
    if name == "duplicate_completed_with_queue":
        world.request(V2, "a")
        world.request(V3, "q")
        world.stack(V2)
        event = world.deployment_event("COMPLETED")
        return [("A", deliver("deployment_state", event, "inv-A")), ("B", deliver("deployment_state", event, "inv-B"))]
    if name == "duplicate_failed_with_queue":
        world.request(V2, "a")
        world.request(V3, "q")
        world.stack(V2)
        event = world.deployment_event("FAILED")
        return [("A", deliver("deployment_state", event, "inv-A")), ("B", deliver("deployment_state", event, "inv-B"))]
    if name == "completed_vs_new_request":
        world.request(V2, "a")
        world.stack(V2)
        done = world.deployment_event("COMPLETED")
        new = world.request_event(V3, "b")
        return [("A", deliver("deployment_state", done, "inv-A")), ("B", deliver("promotion_requested", new, "inv-B"))]
    if name == "two_requests_queue_at_once":
        world.request(V2, "a")
        b, c = world.request_event(V3, "b"), world.request_event(V4, "c")
        return [("A", deliver("promotion_requested", b, "inv-A")), ("B", deliver("promotion_requested", c, "inv-B"))]
    if name == "completed_vs_sweep":
        # The deployment's event comes two hours late, just as the sweep finds the promotion stuck:
        # both run at that later time.
        world.request(V2, "a")
        world.stack(V2)
        done = world.deployment_event("COMPLETED")
        pipeline_tenant[0] = world.tenant
        return [("A", deliver("deployment_state", done, "inv-A")), ("B", _sweep(p))]
    raise ValueError(name)


SCENARIOS = [
    "duplicate_request",
    "two_requests",
    "duplicate_create_complete",
    "duplicate_completed_with_queue",
    "duplicate_failed_with_queue",
    "completed_vs_new_request",
    "two_requests_queue_at_once",
    "completed_vs_sweep",
]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_interleaving_keeps_the_invariants(pipeline, name):
    guard = LockGuard()
    for client in (pipeline.deps.store.parameters.client,):
        client.meta.events.register("before-parameter-build.ssm.DeleteParameter", guard)
        client.meta.events.register("before-parameter-build.ssm.DeleteParameters", guard)
    runs = 0
    ran: set[str] = set()
    gen = explore(BOUND, LIMIT)
    prefix = next(gen)
    session = CachedSession(pipeline.session)
    while True:
        world = World(pipeline, session)
        bodies = scenario(world, name)
        scheduler = Scheduler(prefix)
        if name == "completed_vs_sweep":
            pipeline.deps.clock = lambda: utcnow() + timedelta(hours=2)
        try:
            workers = run_on(pipeline, scheduler, bodies)
        finally:
            pipeline.deps.clock = utcnow
        for worker in workers:
            # A loser may stop with an ordinary outcome; only the documented retry signal may raise.
            assert worker.error is None or type(worker.error).__name__ == "NotYet", (worker.name, worker.error)
        pipeline.outbox.drain()
        world.drive_to_end()
        pipeline.outbox.drain()
        check_invariants(world, guard, ran)
        runs += 1
        try:
            prefix = gen.send(scheduler.decisions)
        except StopIteration:
            break
    print(f"{name}: {runs} interleavings (bound {BOUND}, limit {LIMIT or 'none'})")
    assert runs >= min(LIMIT or 4, 4)
    _ = json, Version
