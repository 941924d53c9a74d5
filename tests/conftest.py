"""Shared fixtures: moto's embedded AWS, a bootstrapped tenant, sample events, call counting.

Handlers are driven with ``chalice.test.Client`` and events built from ``tests/events``. moto emits
no RDS, CloudFormation or ECS events and finishes everything synchronously, so tests feed the status
events themselves (``events.stack_status(...)``, ``events.deployment(...)``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from moto import mock_aws

from chalicelib.deps import Deps, reset_deps, set_deps
from chalicelib.settings import Settings
from tierlift import moto_patches
from tierlift.buses import LOCAL_BUS
from tierlift.world import bootstrap_tenant

moto_patches.apply()

os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # the AMI catalogue costs ~0.15 s a test

LOCAL_EVENTS = Path(__file__).resolve().parent / "events"
MUTATING_PREFIXES = (
    "Copy",
    "Create",
    "Delete",
    "Put",
    "Update",
    "Register",
    "Deregister",
    "Modify",
    "Restore",
    "Start",
    "Stop",
)


def sample(name: str) -> dict[str, Any]:
    """A sample event from ``tests/events``."""
    return json.loads((LOCAL_EVENTS / name).read_text())


class Events:
    session: boto3.session.Session | None = None
    sent: int = 0

    def _live_stack_id(self, stack_name: str) -> str | None:
        if self.session is None:
            return None
        try:
            stacks = self.session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
        except Exception:
            return None
        return next((s["StackId"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"), None)

    """Builders of AWS-shaped events from the samples, with the fields a test cares about replaced."""

    @staticmethod
    def _fresh(name: str) -> dict[str, Any]:
        event = copy.deepcopy(sample(name))
        event["id"] = str(uuid.uuid4())
        return event

    def promotion_requested(self, **detail: Any) -> dict[str, Any]:
        """A request; each one a second after the one before (the queue orders requests by their time)."""
        event = self._fresh("custom-event-tierlift-promotion-requested.json")
        self.sent += 1
        event["time"] = (datetime(2026, 11, 28, 9, 0, tzinfo=UTC) + timedelta(seconds=self.sent)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        event["detail"] = {k: v for k, v in detail.items() if v is not None}
        return event

    def snapshot_requested(self, tenant: Any = "xy-0146", when: str = "2026-11-27T20:00:00Z") -> dict[str, Any]:
        event = self._fresh("custom-event-tierlift-promotion-requested.json")
        event["detail-type"] = "Snapshot Requested"
        event["time"] = when
        event["detail"] = {"tenant": tenant, "requested_by": "test"}
        return event

    def snapshot_created(self, snapshot_id: str, name: str = "rds-snapshot-created-manual.json") -> dict[str, Any]:
        event = self._fresh(name)
        arn = f"arn:aws:rds:us-east-1:123456789012:snapshot:{snapshot_id}"
        event["resources"] = [arn]
        event["detail"]["SourceArn"] = arn
        event["detail"]["SourceIdentifier"] = snapshot_id
        return event

    def snapshot_copied(self, snapshot_id: str) -> dict[str, Any]:
        """RDS-EVENT-0197: a local snapshot copy (``snapshot_id``, the copy) finished."""
        event = self.snapshot_created(snapshot_id, "rds-snapshot-copy-finished.json")
        event["detail"]["Message"] = f"Finished copy of snapshot {snapshot_id} in region us-east-1"
        return event

    def stack_status(
        self, stack_name: str, status: str, reason: str = "", stack_id: str | None = None
    ) -> dict[str, Any]:
        """A status event of the stack of that name: the live stack's id when there is one (as AWS sends)."""
        event = self._fresh("cfn-stack-create-complete.json")
        arn = stack_id or self._live_stack_id(stack_name)
        arn = (
            arn
            or f"arn:aws:cloudformation:us-east-1:123456789012:stack/{stack_name}/5b2e8a40-ac9e-11f1-8f3c-0a1b2c3d4e5f"
        )
        event["resources"] = [arn]
        event["detail"]["stack-id"] = arn
        event["detail"]["status-details"] = {"status": status, "status-reason": reason}
        return event

    def deployment(
        self,
        deployment_id: str,
        outcome: str = "COMPLETED",
        *,
        cluster: str = "common-nonprod",
        service: str = "xy-0146-qa",
    ) -> dict[str, Any]:
        name = {"COMPLETED": "ecs-deployment-completed.json", "FAILED": "ecs-deployment-failed.json"}.get(
            outcome, "ecs-deployment-in-progress.json"
        )
        event = self._fresh(name)
        event["resources"] = [f"arn:aws:ecs:us-east-1:123456789012:service/{cluster}/{service}"]
        event["detail"]["deploymentId"] = deployment_id
        return event


@pytest.fixture
def events(request: pytest.FixtureRequest) -> Events:
    built = Events()
    if "aws" in request.fixturenames:
        built.session = request.getfixturevalue("aws")
    return built


# One botocore loader for every test's session: service models and endpoint data are parsed once per
# worker instead of once per test (a test's clients otherwise spend more time loading JSON than calling).
_LOADER = botocore.loaders.create_loader()


def session() -> boto3.session.Session:
    """A fresh boto3 session (its own credentials and clients) sharing the parsed service models."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core, region_name="us-east-1")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    """moto's embedded AWS with fake credentials in us-east-1; the app's cached clients are reset."""
    for key in list(os.environ):
        if key.startswith("AWS_") or key.startswith("TIERLIFT_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    reset_deps()
    with mock_aws():
        yield session()
    reset_deps()


def ensure_bus(session: boto3.session.Session, name: str = LOCAL_BUS) -> str:
    """tierlift's own bus, as the pipeline's deployment creates it (where the handlers put their events)."""
    events = session.client("events")
    with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
        events.create_event_bus(Name=name)
    return name


class Outbox:
    """tierlift's own events as EventBridge delivered them (a rule on tierlift's bus routes them to SQS)."""

    def __init__(self, session: boto3.session.Session) -> None:
        self.sqs = session.client("sqs")
        self.url = self.sqs.create_queue(QueueName="tierlift-outbox")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus = session.client("events")
        name = ensure_bus(session)
        bus.put_rule(Name="tierlift-outbox", EventPattern=json.dumps({"source": ["tierlift"]}), EventBusName=name)
        bus.put_targets(Rule="tierlift-outbox", EventBusName=name, Targets=[{"Id": "outbox", "Arn": arn}])
        self.seen: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        """Events put since the last drain, in order."""
        out: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                break
            for message in messages:
                event = json.loads(message["Body"])
                # moto's SQS target leaves out envelope keys EventBridge always sends; fill them in.
                event.setdefault("version", "0")
                event.setdefault("account", "123456789012")
                event.setdefault("region", "us-east-1")
                event.setdefault("resources", [])
                out.append(event)
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        self.seen.extend(out)
        return out

    def types(self) -> list[str]:
        return [e["detail-type"] for e in self.drain()]


@pytest.fixture
def outbox(aws: boto3.session.Session) -> Outbox:
    return Outbox(aws)


@pytest.fixture
def world(aws: boto3.session.Session) -> dict[str, Any]:
    """Tenant xy-0146: common-nonprod/prod, the dev DB, qa and prod services, the config in SSM."""
    return bootstrap_tenant(aws)


@pytest.fixture
def deps(aws: boto3.session.Session) -> Deps:
    """The Deps every handler uses during the test (installed as the container-wide instance)."""
    from chalicelib.usecases.headroom import forget_cached
    from chalicelib.usecases.requests import forget_engine_versions

    forget_cached()
    forget_engine_versions()
    built = Deps.from_session(aws, Settings.from_env())
    ensure_bus(aws, built.settings.event_bus)
    set_deps(built)
    return built


def take_source_snapshot(session: boto3.session.Session, version: str, tenant: str = "xy-0146") -> str:
    """A manual snapshot of the dev DB named per the contract (moto makes it available at once)."""
    snapshot_id = f"{tenant}-dev-{version}"
    session.client("rds").create_db_snapshot(DBSnapshotIdentifier=snapshot_id, DBInstanceIdentifier=f"{tenant}-dev")
    return snapshot_id


class CallCounter:
    """Counts AWS API calls made through botocore (all clients) with a ``before-call`` hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.params: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls.append((model.service_model.service_name, model.name))

    def capture(self, model: Any, params: Any = None, **_: Any) -> None:
        """``before-parameter-build`` hook: the parameters as the code passed them."""
        self.params.append((model.name, dict(params) if isinstance(params, dict) else {}))

    def last(self, operation: str) -> dict[str, Any]:
        """The (wire) parameters of the last call of ``operation``."""
        return next(p for op, p in reversed(self.params) if op == operation)

    @property
    def mutating(self) -> list[tuple[str, str]]:
        """Calls that change AWS state, other than putting tierlift's own events."""
        return [(s, op) for s, op in self.calls if op.startswith(MUTATING_PREFIXES) and op != "PutEvents"]

    def by_service(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for service, op in self.calls:
            key = f"{service}:{op}"
            counts[key] = counts.get(key, 0) + 1
        return counts


@pytest.fixture
def calls(deps: Deps) -> CallCounter:
    """Counts every AWS call the app's clients make from now on."""
    counter = CallCounter()
    for adapter in (
        deps.store.parameters.client,
        deps.rds.client,
        deps.stacks.client,
        deps.services.client,
        deps.bus.client,
    ):
        adapter.meta.events.register("before-call.*.*", counter)
        adapter.meta.events.register("before-parameter-build.*.*", counter.capture)
    return counter


def utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


@pytest.fixture
def pipeline(aws: boto3.session.Session, world: dict[str, Any], deps: Deps, outbox: Outbox, events: Events) -> Any:
    """The tenant bootstrapped and the handlers ready to be fed events (see ``tests/flow.py``)."""
    from tests.flow import Pipeline

    return Pipeline(aws, deps, outbox, events)
