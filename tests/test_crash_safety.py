"""A Lambda can die between any two AWS calls; Lambda's retry (the same request id) must converge.

For each scenario and each of its deliveries, the handler is killed just before its k-th state-changing
AWS call (k = 1, 2, … until the delivery makes fewer calls), the same event is delivered again as
Lambda's retry of that invocation, and the scenario is driven on to the end. The end state must be
exactly that of an undisturbed run, and every request must have exactly one terminal event — except
when the crash fell right after a terminal event was put and before the lock's release recorded it: the
one window the contract documents (consumers dedupe on ``promotion_id`` + ``detail-type``).
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.conftest import MUTATING_PREFIXES

V1 = "20261120093000"
V2 = "20261127200000"
V3 = "20261128010000"
TERMINAL = {"Promotion Completed", "Promotion Failed", "Promotion Rolled Back", "Promotion Rejected"}


class Crash(Exception):
    """The Lambda died."""


class CrashBefore:
    """Raises just before the k-th state-changing call (PutEvents included), once."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen = 0
        self.fired = False
        self.before: tuple[str, str] = ("", "")
        self.last_call: tuple[str, str] = ("", "")

    def __call__(self, model, params=None, **_):
        if self.fired or not model.name.startswith((*MUTATING_PREFIXES, "PutEvents")):
            return
        self.seen += 1
        name = params.get("Name", "") if isinstance(params, dict) else ""
        if self.seen == self.k:
            self.fired = True
            self.before = (model.name, str(name))
            raise Crash(f"crash before {model.name}")
        self.last_call = (model.name, str(name))


def clients(deps):
    return (deps.store.parameters.client, deps.rds.client, deps.stacks.client, deps.services.client, deps.bus.client)


def arm(deps, k):
    hook = CrashBefore(k)
    for c in clients(deps):
        c.meta.events.register_first("before-parameter-build.*.*", hook)
    return hook


def disarm(deps, hook):
    for c in clients(deps):
        c.meta.events.unregister("before-parameter-build.*.*", hook)


def end_state(pipeline):
    ns_state = pipeline.deps.store.recorded(pipeline.deps.store.get_config(_tenant()).namespace("qa"))
    return {
        "active": pipeline.active(),
        "stacks": pipeline.stacks(),
        "promotion": ns_state.promotion.id if ns_state.promotion else None,
        "queued": [q.id for q in ns_state.waiting],
        "td_version": pipeline.container_env(pipeline.service()["taskDefinition"])["TIERLIFT_VERSION"],
    }


def _tenant():
    from chalicelib.domain.names import Tenant

    return Tenant.parse("xy-0146")


def scenario_steps(pipeline, name):
    """The deliveries of one scenario, each (label, handler, event factory)."""
    a = pipeline.events.promotion_requested(tenant="xy-0146", environment="qa", version=V2)
    b = pipeline.events.promotion_requested(tenant="xy-0146", environment="qa", version=V3)

    def stack(version, status="CREATE_COMPLETE"):
        return lambda: pipeline.events.stack_status(f"xy-0146-qa-db-{version}", status)

    def deployment(outcome):
        return lambda: pipeline.events.deployment(pipeline.promotion().deployment_id, outcome)

    if name == "completed":
        return [
            ("request", "promotion_requested", lambda: a),
            ("create_complete", "stack_status", stack(V2)),
            ("completed", "deployment_state", deployment("COMPLETED")),
        ]
    if name == "rolled_back":
        return [
            ("request", "promotion_requested", lambda: a),
            ("create_complete", "stack_status", stack(V2)),
            ("failed", "deployment_state", deployment("FAILED")),
        ]
    if name == "queue_drain":
        return [
            ("request_a", "promotion_requested", lambda: a),
            ("request_b_queued", "promotion_requested", lambda: b),
            ("create_complete_a", "stack_status", stack(V2)),
            ("completed_a_drains_b", "deployment_state", deployment("COMPLETED")),
            ("create_complete_b", "stack_status", stack(V3)),
            ("completed_b", "deployment_state", deployment("COMPLETED")),
        ]
    raise ValueError(name)


EXPECTED = {
    "completed": {"active": V2, "stacks": {f"xy-0146-qa-db-{V2}": "CREATE_COMPLETE"}, "td_version": V2},
    "rolled_back": {"active": V1, "stacks": {f"xy-0146-qa-db-{V1}": "CREATE_COMPLETE"}, "td_version": V1},
    "queue_drain": {"active": V3, "stacks": {f"xy-0146-qa-db-{V3}": "CREATE_COMPLETE"}, "td_version": V3},
}
# State-changing calls (PutEvents included) of each delivery of each scenario, undisturbed:
# tests/test_call_counts.py pins the totals. One more than these would not reach a crash point.
MUTATING_CALLS = {"completed": [3, 6, 4], "rolled_back": [3, 6, 5], "queue_drain": [3, 2, 6, 8, 6, 4]}
# rolled_back shares its first two deliveries with completed: only its last one is crashed separately.
CASES = [
    (name, step, k)
    for name, calls in MUTATING_CALLS.items()
    for step, count in enumerate(calls)
    for k in range(1, count + 1)
    if not (name == "rolled_back" and step < 2)
]


def prepare(pipeline):
    for version in (V1, V2, V3):
        pipeline.snapshot(version)
    pipeline.promote(V1)
    pipeline.outbox.drain()


@pytest.mark.parametrize(("name", "crash_step", "k"), CASES)
def test_crash_then_retry_converges(pipeline, name, crash_step, k):
    prepare(pipeline)
    hook = None
    for index, (_, handler, make) in enumerate(scenario_steps(pipeline, name)):
        event = make()
        request_id = f"req-{index}"
        if index == crash_step:
            hook = arm(pipeline.deps, k)
            try:
                pipeline.invoke(handler, event, request_id)
            except Crash:
                pass
            finally:
                disarm(pipeline.deps, hook)
            assert hook.fired, f"delivery {index} made fewer than {k} state-changing calls"
        pipeline.invoke(handler, event, request_id)  # Lambda's retry (or the only delivery)
    state = end_state(pipeline)
    assert {key: state[key] for key in ("active", "stacks", "td_version")} == EXPECTED[name]
    assert state["promotion"] is None and state["queued"] == []
    terminal = Counter(e["detail"]["promotion_id"] for e in pipeline.outbox.drain() if e["detail-type"] in TERMINAL)
    requests = 2 if name == "queue_drain" else 1
    assert len(terminal) == requests, terminal
    duplicated = {pid for pid, n in terminal.items() if n > 1}
    if duplicated:
        # The documented window only: the crash came after the terminal PutEvents, before the lock's
        # release (one DeleteParameters) recorded that the promotion ended.
        assert hook is not None and hook.last_call[0] == "PutEvents" and hook.before[0] == "DeleteParameters", (
            hook.before,
            hook.last_call,
        )
        assert all(terminal[pid] == 2 for pid in duplicated)
