"""A Lambda can die between any two AWS calls; the re-delivered event must converge.

For each stage, the handler is killed just before its k-th state-changing AWS call (k = 1, 2, …, every
such call of that stage), the same event is delivered again, and the promotion is driven on to the
end. The end state must be exactly that of an undisturbed run.
"""

from __future__ import annotations

import pytest

from tests.conftest import MUTATING_PREFIXES

V1 = "20261120093000"
V2 = "20261127200000"
STACK2 = "xy-0146-qa-db-20261127200000"


class Crash(Exception):
    """The Lambda died."""


class CrashBefore:
    """Raises just before the k-th state-changing call (PutEvents included), once."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen = 0
        self.fired = False

    def __call__(self, model, **_):
        if self.fired or not model.name.startswith((*MUTATING_PREFIXES, "PutEvents")):
            return
        self.seen += 1
        if self.seen == self.k:
            self.fired = True
            raise Crash(f"crash before {model.name}")


def arm(deps, k):
    hook = CrashBefore(k)
    for c in (deps.store._ssm, deps.rds.client, deps.stacks.client, deps.services.client, deps.bus.client):
        c.meta.events.register_first("before-call.*.*", hook)
    return hook


def disarm(deps, hook):
    for c in (deps.store._ssm, deps.rds.client, deps.stacks.client, deps.services.client, deps.bus.client):
        c.meta.events.unregister("before-call.*.*", hook)


def prepare(pipeline):
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    pipeline.promote(V1)


def end_state(pipeline):
    return {
        "active": pipeline.active(),
        "stacks": pipeline.stacks(),
        "promotion": pipeline.promotion(),
        "queued": pipeline.deps.store.get_queued(pipeline.promotion().namespace) if pipeline.promotion() else None,
        "td_version": pipeline.container_env(pipeline.service()["taskDefinition"])["TIERLIFT_VERSION"],
    }


# The state-changing calls (PutEvents included) each stage makes: see tests/test_call_counts.py.
STAGES = {"request": 4, "create_complete": 7, "completed": 4, "failed": 6}


def drive(pipeline, stage, outcome, crash_k):
    """Run one promotion V1 -> V2, crashing stage `stage` before its k-th mutating call, then re-deliver."""
    deps = pipeline.deps
    request = pipeline.events.promotion_requested(tenant="xy-0146", environment="qa", version=V2)
    steps = [
        ("request", lambda: pipeline.invoke("promotion_requested", request)),
        ("create_complete", lambda: pipeline.stack_event(V2, "CREATE_COMPLETE")),
        (outcome, lambda: pipeline.deployment_event(outcome.upper())),
    ]
    fired = False
    for name, step in steps:
        if name == stage:
            hook = arm(deps, crash_k)
            try:
                step()
            except Crash:
                pass
            finally:
                disarm(deps, hook)
            fired = hook.fired
            step()  # at-least-once: the same event again
        else:
            step()
    return fired


EXPECTED = {
    "completed": {
        "active": V2,
        "stacks": {STACK2: "CREATE_COMPLETE"},
        "promotion": None,
        "queued": None,
        "td_version": V2,
    },
    "failed": {
        "active": V1,
        "stacks": {"xy-0146-qa-db-20261120093000": "CREATE_COMPLETE"},
        "promotion": None,
        "queued": None,
        "td_version": V1,
    },
}

CASES = [
    (stage, outcome, k)
    for outcome in ("completed", "failed")
    for stage in ("request", "create_complete", outcome)
    for k in range(1, STAGES[stage] + 1)
    if not (outcome == "failed" and stage == "request")  # the request stage is the same for both outcomes
]


@pytest.mark.parametrize(("stage", "outcome", "k"), CASES)
def test_crash_then_redelivery_converges(pipeline, stage, outcome, k):
    prepare(pipeline)
    assert drive(pipeline, stage, outcome, k), "the crash point was never reached"
    assert end_state(pipeline) == EXPECTED[outcome]
