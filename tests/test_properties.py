"""Hostile input, as properties: whatever arrives, no unhandled exception and no mutating AWS call.

Every name/version parser and every event view over arbitrary JSON, wrong types, huge and unicode
strings, crafted names (other tenants, other SSM paths, ``../``, ``%2F``) and impossible dates raises
only its own error type; every handler given such events answers with a reason and changes nothing
(``PutEvents`` of a ``Promotion Rejected`` is the one call a rejected request may cause, with a reason).
Derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.domain import events as ev
from chalicelib.domain.config import InvalidConfig, parse_config
from chalicelib.domain.names import (
    InvalidName,
    Namespace,
    Tenant,
    Version,
    Versioned,
    parse_environment,
    stack_name_from_arn,
)

CRAFTED = [
    "",
    "../",
    "xy-0146/../zz-9999",
    "xy-0146%2Fqa",
    "/tierlift/xy-0146/config",
    "xy-0146-qa/../../prod",
    "zz-9999",
    "XY-0146",
    "xy-0146\n",
    "xy-0146\x00",
    "xy-0146-qa-db-20261127200000/../x",
    "x" * 5000,
    "ü-0146",
    "xy-0146-prod-db-99999999999999",
    "20261340000000",
    "20260229000000",
    "99999999999999",
    "2026112720000",
    "arn:aws:cloudformation:us-east-1:123456789012:stack/../../x/1",
    "arn:aws:ecs:us-east-1:123456789012:service/common-nonprod/../xy-0146-qa",
]
text = st.one_of(st.sampled_from(CRAFTED), st.text(max_size=300), st.text(alphabet="abc-0123456789/.%", max_size=40))
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)
PROPERTY = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------------------------------
# Parsers: only their own error types
# --------------------------------------------------------------------------------------------------
@PROPERTY
@given(json_value)
def test_name_parsers_raise_only_invalid_name(value: Any) -> None:
    for parse in (
        Version.parse,
        Tenant.parse,
        Namespace.parse,
        Versioned.parse_stack,
        Versioned.parse_snapshot,
        parse_environment,
        stack_name_from_arn,
    ):
        try:
            parsed = parse(value)
        except InvalidName:
            continue
        # Whatever parses names only what the contract allows: no path separators, no escapes.
        rendered = str(getattr(parsed, "name", parsed))
        assert "/" not in rendered and ".." not in rendered and "%" not in rendered


@PROPERTY
@given(json_value)
def test_event_views_raise_only_invalid_event(value: Any) -> None:
    for view in (
        ev.PromotionRequest,
        ev.Command,
        ev.SnapshotRequest,
        ev.RdsSnapshotEvent,
        ev.StackStatusEvent,
        ev.DeploymentEvent,
    ):
        with contextlib.suppress(ev.InvalidEvent):
            view.parse(value)


@PROPERTY
@given(st.dictionaries(st.sampled_from(["id", "time", "detail", "detail-type", "account", "resources"]), json_value))
def test_event_views_on_envelope_shaped_input(value: dict[str, Any]) -> None:
    test_event_views_raise_only_invalid_event.hypothesis.inner_test(value)  # type: ignore[attr-defined]


@PROPERTY
@given(json_value)
def test_config_parser_raises_only_invalid_config(value: Any) -> None:
    with contextlib.suppress(InvalidConfig):
        parse_config(Tenant.parse("xy-0146"), value)


# --------------------------------------------------------------------------------------------------
# Handlers: a reason, nothing changed
# --------------------------------------------------------------------------------------------------
def envelope(detail_type: str, detail: Any, **extra: Any) -> dict[str, Any]:
    event = {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": detail_type,
        "source": "tierlift",
        "account": "123456789012",
        "time": "2026-11-27T20:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }
    event.update(extra)
    return event


def hostile_detail(keys: list[str]) -> st.SearchStrategy[Any]:
    """Details with the expected keys (some missing, some extra) holding hostile values."""
    return st.one_of(
        json_value,
        st.fixed_dictionaries({}, optional={k: st.one_of(text, json_value) for k in keys}),
    )


@pytest.fixture
def ready(pipeline):
    pipeline.snapshot("20261120093000")
    pipeline.promote("20261120093000")
    pipeline.outbox.drain()
    return pipeline


def _no_change(pipeline: Any, calls: Any, handler: str, event: Any) -> dict[str, Any]:
    calls.calls.clear()
    result = pipeline.invoke(handler, event)
    assert calls.mutating == [], (handler, calls.mutating)
    assert result.get("action") in ("reject", "ignore", "snapshot_failed"), result  # each with its reason
    assert result.get("reason"), result
    return result


@PROPERTY
@given(
    detail=hostile_detail(["tenant", "environment", "version", "image", "requested_by", "override"]),
    envelope_extra=st.fixed_dictionaries({}, optional={"id": json_value, "time": json_value, "account": json_value}),
)
def test_promotion_requested_rejects_hostile_requests_with_a_reason(ready, calls, detail, envelope_extra) -> None:
    if isinstance(detail, dict) and detail.get("tenant") == "xy-0146":
        detail["tenant"] = "zz-9999"  # a known tenant with valid fields would be a real promotion
    ready.outbox.drain()
    result = _no_change(ready, calls, "promotion_requested", envelope("Promotion Requested", detail, **envelope_extra))
    assert result["action"] == "reject"
    rejected = [e for e in ready.outbox.drain() if e["detail-type"] == "Promotion Rejected"]
    assert len(rejected) == 1 and rejected[0]["detail"]["reason"]


@PROPERTY
@given(
    detail_type=st.sampled_from(["Promotion Approved", "Promotion Cancelled"]),
    detail=hostile_detail(["tenant", "environment", "promotion_id", "command", "requested_by", "reason"]),
)
def test_operator_commands_reject_hostile_input(ready, calls, detail_type, detail) -> None:
    handler = "promotion_approved" if detail_type == "Promotion Approved" else "promotion_cancelled"
    _no_change(ready, calls, handler, envelope(detail_type, detail))


@PROPERTY
@given(detail=hostile_detail(["tenant", "requested_by"]), time=json_value)
def test_snapshot_requested_ignores_hostile_input(ready, calls, detail, time) -> None:
    if isinstance(detail, dict) and detail.get("tenant") == "xy-0146":
        detail["tenant"] = "../xy-0146"
    _no_change(ready, calls, "snapshot_requested", envelope("Snapshot Requested", detail, time=time))


@PROPERTY
@given(detail=hostile_detail(["EventID", "SourceIdentifier", "SourceType", "SourceArn"]))
def test_snapshot_created_ignores_hostile_input(ready, calls, detail) -> None:
    _no_change(ready, calls, "snapshot_created", envelope("RDS DB Snapshot Event", detail, source="aws.rds"))


@PROPERTY
@given(
    stack=st.one_of(text, st.builds(lambda t: f"arn:aws:cloudformation:us-east-1:123456789012:stack/{t}/x", text)),
    status=st.one_of(
        st.sampled_from(["CREATE_COMPLETE", "ROLLBACK_COMPLETE", "DELETE_COMPLETE", "CREATE_FAILED"]), json_value
    ),
    reason=json_value,
)
def test_stack_status_ignores_hostile_input(ready, calls, stack, status, reason) -> None:
    if isinstance(stack, str) and "xy-0146-qa-db-20261120093000" in stack:
        stack = stack.replace("xy-0146", "zz-9999")
    detail = {"stack-id": stack, "status-details": {"status": status, "status-reason": reason}}
    _no_change(ready, calls, "stack_status", envelope("CloudFormation Stack Status Change", detail))


@PROPERTY
@given(
    resources=st.one_of(json_value, st.lists(st.builds(lambda t: f"arn:aws:ecs:us-east-1:1:service/{t}", text))),
    detail=hostile_detail(["eventName", "deploymentId", "reason"]),
)
def test_deployment_state_ignores_hostile_input(ready, calls, resources, detail) -> None:
    event = envelope("ECS Deployment State Change", detail, source="aws.ecs", resources=resources)
    calls.calls.clear()
    result = ready.invoke("deployment_state", event)
    assert calls.mutating == []
    assert result.get("action") == "ignore" and result.get("reason")
