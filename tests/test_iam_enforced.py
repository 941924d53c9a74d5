"""An end-to-end promotion and a sweep under moto's IAM enforcement, each handler with only its policy.

moto authorises every request by its action (it evaluates Resource against ``*`` and Conditions against
no request context): so each function's policy is given to moto with its exact actions, ``Resource: *``
and no conditions. Resources and conditions are checked by ``tests/test_package.py`` and the linters.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import settings as moto_settings
from moto.core import authorization

import chalicelib.entry
from chalicelib.deps import Deps
from chalicelib.settings import Settings
from tierlift import policies

TENANT = "xy-0146"
ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def moto_form(document: dict[str, Any]) -> dict[str, Any]:
    """The same actions, ``Resource: *``, no conditions: what moto can evaluate."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": s["Sid"], "Effect": s["Effect"], "Action": s["Action"], "Resource": "*"}
            for s in document["Statement"]
        ],
    }


def function_policy(name: str) -> dict[str, Any]:
    """The function's policy file plus what the packaged template grants it (PutEvents on its bus)."""
    document = json.loads(policies.rendered(name))
    document["Statement"] += policies.template_statements(name, "arn:aws:events:us-east-1:123456789012:event-bus/x")
    return document


def _keys(iam: Any, name: str, document: dict[str, Any]) -> boto3.session.Session:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name="us-east-1"
    )


@pytest.fixture
def enforced(aws: boto3.session.Session, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, events: Any) -> Any:
    """The bootstrapped tenant; then one IAM user per function (its policy only) and enforcement on."""
    from chalicelib.usecases.headroom import forget_cached
    from chalicelib.usecases.requests import forget_engine_versions
    from tests.conftest import Outbox
    from tests.flow import Pipeline

    iam = aws.client("iam")
    admin = _keys(iam, "admin", ADMIN)
    sessions = {name: _keys(iam, f"fn-{name}", moto_form(function_policy(name))) for name in policies.FUNCTIONS}
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setattr(authorization.ActionAuthenticatorMixin, "request_count", 0)
    forget_cached()
    forget_engine_versions()
    monkeypatch.setenv("TIERLIFT_GRACE_SECONDS", "0")  # the sweep's orphan is old enough at once
    settings = Settings.from_env()
    per_function = {name: Deps.from_session(s, settings) for name, s in sessions.items()}
    current: dict[str, str] = {}

    def get_deps() -> Deps:
        return per_function[current["handler"]]

    monkeypatch.setattr(chalicelib.entry, "get_deps", get_deps)
    outbox = Outbox(admin)
    test_deps = Deps.from_session(admin, settings)

    class EnforcedPipeline(Pipeline):
        def invoke(self, handler: str, event: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
            current["handler"] = handler
            return super().invoke(handler, event, request_id)

        def signed(self, route: str, body: dict[str, Any], principal: str | None) -> tuple[int, dict[str, Any]]:
            current["handler"] = "api_handler"  # Chalice's one function for the REST API
            return super().signed(route, body, principal)

    events.session = admin  # the test's own reads (live stack ids) with the admin's keys
    pipeline = EnforcedPipeline(admin, test_deps, outbox, events)
    pipeline.sessions = sessions  # type: ignore[attr-defined]
    pipeline.per_function = per_function  # type: ignore[attr-defined]
    return pipeline


def test_enforcement_is_on(enforced: Any) -> None:
    """A function's credentials are refused an action outside its policy."""
    from botocore.exceptions import ClientError

    rds = enforced.sessions["snapshot_created"].client("rds")
    with pytest.raises(ClientError) as refused:
        rds.delete_db_snapshot(DBSnapshotIdentifier="xy-0146-dev-20261127200000")
    assert refused.value.response["Error"]["Code"] in {"AccessDenied", "AccessDeniedException"}


def test_promotion_end_to_end_with_each_functions_policy(enforced: Any) -> None:
    enforced.snapshot("20261127200000")
    enforced.promote("20261127200000", "qa")
    assert enforced.active("qa") == "20261127200000"
    types = enforced.outbox.types()
    assert "Promotion Completed" in types, types
    # a second version replaces it: the previous DB stack is deleted with deployment_state's policy
    enforced.snapshot("20261128010000")
    enforced.promote("20261128010000", "qa")
    assert enforced.active("qa") == "20261128010000"
    assert list(enforced.stacks()) == [f"{TENANT}-qa-db-20261128010000"]


def test_sweep_with_its_policy(enforced: Any) -> None:
    enforced.snapshot("20261127200000")
    enforced.promote("20261127200000", "qa")
    # an orphan: a tierlift-managed DB stack no promotion refers to, older than the grace period
    orphan = f"{TENANT}-qa-db-20261101000000"
    enforced.deps.stacks.create(
        orphan,
        json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}),
        {},
        {
            "tierlift:managed": "true",
            "tierlift:tenant": TENANT,
            "tierlift:environment": "qa",
            "tierlift:version": "20261101000000",
        },
        "orphan",
    )
    event = {
        "version": "0",
        "id": "sweep-1",
        "source": "aws.events",
        "detail-type": "Scheduled Event",
        "account": "123456789012",
        "time": "2026-11-28T08:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/tierlift-sweep"],
        "detail": {},
    }
    result = enforced.invoke("sweep", event)
    assert isinstance(result, dict), result
    assert enforced.active("qa") == "20261127200000"
    assert list(enforced.stacks()) == [f"{TENANT}-qa-db-20261127200000"], result  # the orphan swept, the active kept
    assert "Stack Swept" in enforced.outbox.types()


def test_snapshots_with_their_policies(enforced: Any) -> None:
    """snapshot_requested takes a Snapshot Requested (a tenant's EventBridge Scheduler schedule puts it),
    snapshot_created asks for qa."""
    taken = enforced.invoke("snapshot_requested", enforced.events.snapshot_requested(when="2026-11-28T02:07:00Z"))
    assert taken["action"] == "snapshot", taken
    name = f"{TENANT}-dev-20261128020700"
    rds = enforced.session.client("rds")
    assert rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]["DBInstanceIdentifier"]
    rds.get_waiter("db_snapshot_available").wait(DBSnapshotIdentifier=name, WaiterConfig={"Delay": 1})
    created = enforced.invoke("snapshot_created", enforced.events.snapshot_created(name))
    assert created["action"] == "request", created
    requested = [e for e in enforced.outbox.drain() if e["detail-type"] == "Promotion Requested"]
    assert [(e["detail"]["environment"], e["detail"]["version"]) for e in requested] == [("qa", "20261128020700")]


def test_approval_and_cancel_with_their_policies(enforced: Any) -> None:
    """prod under approval: one promotion approved (promotion_approved cuts over), one cancelled."""
    from tests.test_operator_control import IMAGES, command, configure

    v1, v2, v3 = "20261120093000", "20261127200000", "20261128010000"
    for version in (v1, v2, v3):
        enforced.snapshot(version)
    enforced.promote(v1)
    enforced.promote(v1, "prod")
    enforced.promote(v2)
    configure(enforced, approval="required", approval_timeout=3600, allowed_images=[IMAGES])
    approved_id = enforced.request("prod", v2)["event"]["id"]
    assert enforced.stack_event(v2, "CREATE_COMPLETE", "prod")["action"] == "await_approval"
    assert command(enforced, "Promotion Approved", "approve", approved_id)["action"] == "deploy"
    enforced.deployment_event("COMPLETED", "prod")
    assert enforced.active("prod") == v2
    enforced.promote(v3)
    cancelled_id = enforced.request("prod", v3)["event"]["id"]
    assert enforced.stack_event(v3, "CREATE_COMPLETE", "prod")["action"] == "await_approval"
    assert command(enforced, "Promotion Cancelled", "cancel", cancelled_id)["action"] == "cancel"
    assert enforced.active("prod") == v2
    assert f"{TENANT}-prod-db-{v3}" not in enforced.stacks()
    assert enforced.promotion("prod") is None
