"""SSM's parameter limit reached: the request is refused with the reason, and nothing is lost.

SSM holds 10,000 standard parameters per account and region; past it every ``PutParameter`` of a new
name fails with ``ParameterLimitExceeded``. A request that would take the lock (or wait in the queue)
is answered ``Promotion Rejected`` naming the limit and what to do; no lock, no queue entry, the active
version and the promotion in flight untouched.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from tests.flow import Pipeline
from tests.test_sweep_stuck import QA, V1, V2, request_event, v1_running  # noqa: F401

V3 = "20261128010000"


def _full_for(p: Pipeline, suffix: str) -> Any:
    """SSM refuses new parameters whose names contain ``suffix`` (the limit reached)."""
    client = p.deps.store.parameters.client
    real = client.put_parameter

    def put_parameter(**kwargs: Any) -> Any:
        if suffix in kwargs["Name"] and not kwargs.get("Overwrite"):
            error = {"Error": {"Code": "ParameterLimitExceeded", "Message": "limit"}}
            raise ClientError(error, "PutParameter")  # type: ignore[arg-type]
        return real(**kwargs)

    client.put_parameter = put_parameter
    return lambda: setattr(client, "put_parameter", real)


def _rejections(outbox: Any) -> list[str]:
    return [e["detail"]["reason"] for e in outbox.drain() if e["detail-type"] == "Promotion Rejected"]


def test_the_lock_refused_by_the_limit_rejects_the_request(v1_running: Pipeline, outbox: Any) -> None:  # noqa: F811 (the fixture)
    p = v1_running
    restore = _full_for(p, f"/{QA.environment}/promotion")
    try:
        result = p.invoke("promotion_requested", request_event(p, V2))
    finally:
        restore()
    assert result["action"] == "reject", result
    [reason] = _rejections(outbox)
    assert "parameter limit" in reason and "nothing was written" in reason and "docs/scale.md" in reason
    rec = p.deps.store.read(QA)
    assert rec.promotion is None and rec.queued == [] and str(rec.active) == V1


def test_the_queue_refused_by_the_limit_rejects_the_waiting_request(
    v1_running: Pipeline,  # noqa: F811 (the fixture)
    outbox: Any,
    aws: Any,
) -> None:
    from tests.conftest import take_source_snapshot

    p = v1_running
    assert p.request("qa", V2)["action"] == "start"
    take_source_snapshot(aws, V3)
    outbox.drain()
    restore = _full_for(p, "/queue/")
    try:
        result = p.invoke("promotion_requested", request_event(p, V3))
    finally:
        restore()
    assert result["action"] == "reject", result
    [reason] = _rejections(outbox)
    assert "parameter limit" in reason
    rec = p.deps.store.read(QA)
    assert rec.promotion is not None and rec.promotion.version.value == V2 and rec.queued == []
