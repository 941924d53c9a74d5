"""Promotions wait for DB-instance headroom under the RDS quota, in request order; none fails for it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chalicelib.domain.model import Stage
from chalicelib.usecases import headroom

V1, V2 = "20261120093000", "20261127200000"
TERMINAL = {"Promotion Completed", "Promotion Failed", "Promotion Rolled Back", "Promotion Rejected"}


@pytest.fixture
def quota(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The account's free DB instances, as DescribeAccountAttributes would report them."""
    state: dict[str, Any] = {"free": 0}
    monkeypatch.setattr(headroom, "free_instances", lambda deps, fresh=False: state["free"])
    return state


def test_promotions_wait_for_headroom_and_start_in_request_order(pipeline, quota, aws):
    p = pipeline
    for version in (V1, V2):
        p.snapshot(version)
    quota["free"] = 10
    p.promote(V1)
    p.promote(V1, "prod")
    quota["free"] = 0
    qa = p.request("qa", V2)
    assert qa["action"] == "wait" and p.parked() == "instance"
    assert f"xy-0146-qa-db-{V2}" not in p.stacks()
    p.outbox.drain()
    queued = [e for e in p.outbox.seen if e["detail-type"] == "Promotion Queued"]
    assert queued[-1]["detail"]["reason"] == "waiting for DB instance headroom"
    # an instance is freed somewhere (a stack finished deleting): the oldest waiting one starts
    quota["free"] = 1
    p.stack_event(V1, "DELETE_COMPLETE", "prod")  # any DB stack finishing its delete admits
    assert p.promotion().stage is Stage.RESTORING
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert p.active() == V2


def test_a_restore_refused_for_the_quota_waits_and_retries_instead_of_failing(pipeline, quota, aws):
    p = pipeline
    for version in (V1, V2):
        p.snapshot(version)
    quota["free"] = None  # RDS does not say: go ahead, RDS itself refuses past the quota
    p.promote(V1)
    request = p.request("qa", V2)
    assert p.promotion().stage is Stage.RESTORING
    name = f"xy-0146-qa-db-{V2}"
    from moto.cloudformation.models import cloudformation_backends

    stack = next(s for s in cloudformation_backends["123456789012"]["us-east-1"].stacks.values() if s.name == name)
    stack.status = "ROLLBACK_COMPLETE"
    refused = p.events.stack_status(name, "ROLLBACK_COMPLETE", "InstanceQuotaExceeded: DB instance quota exceeded")
    assert p.invoke("stack_status", refused)["action"] == "wait"
    assert p.promotion().id == request["event"]["id"] and p.parked() == "instance"
    assert name not in p.stacks()  # the refused stack goes
    p.stack_event(V2, "DELETE_COMPLETE")  # ... and when it is gone, the restore is tried again
    assert p.promotion().stage is Stage.RESTORING and name in p.stacks()
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert p.active() == V2
    p.outbox.drain()
    terminal = Counter(e["detail-type"] for e in p.outbox.seen if e["detail"]["promotion_id"] == request["event"]["id"])
    assert terminal["Promotion Completed"] == 1 and terminal["Promotion Failed"] == 0
