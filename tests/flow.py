"""Drive the pipeline stage by stage through the real handlers (``chalice.test.Client``)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import boto3
from chalice.test import Client

from app import app
from chalicelib.deps import Deps
from chalicelib.domain.model import Promotion
from chalicelib.domain.names import Namespace, Version
from tests.conftest import Events, Outbox, take_source_snapshot

ACCOUNT = "123456789012"
REQUESTER = f"arn:aws:sts::{ACCOUNT}:assumed-role/tierlift-operators/alice"
APPROVER = f"arn:aws:sts::{ACCOUNT}:assumed-role/tierlift-operators/bob"


def signed(route: str, body: dict[str, Any], principal: str | None) -> tuple[int, dict[str, Any]]:
    """One call of tierlift's signed API as API Gateway hands it to the Lambda: ``principal`` is the
    caller's ARN that IAM authorization established (None: an unsigned call)."""
    from tierlift.local.gateway import Identity, proxy_event

    event = proxy_event(route, "POST", json.dumps(body).encode(), Identity("", principal or ""), "AKIA", ACCOUNT)
    if principal is None:
        event["requestContext"]["identity"] = {}
    context = SimpleNamespace(aws_request_id=event["requestContext"]["requestId"], function_name="api_handler")
    response = app(event, context)
    return int(response["statusCode"]), json.loads(response["body"] or "{}")


class Pipeline:
    def __init__(self, session: boto3.session.Session, deps: Deps, outbox: Outbox, events: Events) -> None:
        self.session = session
        self.deps = deps
        self.outbox = outbox
        self.events = events
        self.client = Client(app)

    def invoke(self, handler: str, event: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
        """Deliver ``event`` to ``handler``; with ``request_id``, as that Lambda invocation (a retry keeps it)."""
        if request_id is None:
            return self.client.lambda_.invoke(handler, event).payload
        import app as app_module

        context = SimpleNamespace(aws_request_id=request_id, function_name=handler, memory_limit_in_mb=256)
        return getattr(app_module, handler)(event, context)  # type: ignore[no-any-return]

    def snapshot(self, version: str) -> str:
        return take_source_snapshot(self.session, version)

    def request(
        self, environment: str = "qa", version: str | None = None, *, signed_by: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """A promotion request: on the bus, or signed (tierlift's API) by ``signed_by`` — by default where the
        environment's two-person rule wants it, as ``tierlift promote`` does."""
        event = self.events.promotion_requested(tenant="xy-0146", environment=environment, version=version, **extra)
        if signed_by is None and self._two_person(environment):
            signed_by = REQUESTER
        if signed_by is not None:
            detail = {**event["detail"], "promotion_id": event["detail"].get("promotion_id") or event["id"]}
            _status, answer = self.signed("promotions", detail, signed_by)
            return answer | {"event": event}
        return self.invoke("promotion_requested", event) | {"event": event}

    def signed(self, route: str, body: dict[str, Any], principal: str | None) -> tuple[int, dict[str, Any]]:
        return signed(route, body, principal)

    def _two_person(self, environment: str) -> bool:
        from chalicelib.domain.config import InvalidConfig
        from chalicelib.domain.names import Tenant

        try:
            config = self.deps.store.get_config(Tenant.parse("xy-0146"))
            return config is not None and config.target(environment).policy.two_person
        except (InvalidConfig, KeyError, LookupError, ValueError):
            return False

    def approve(self, promotion_id: str, environment: str = "prod", principal: str | None = APPROVER) -> dict[str, Any]:
        body = {"tenant": "xy-0146", "environment": environment, "promotion_id": promotion_id}
        status, answer = self.signed("approvals", body, principal)
        return answer | {"status": status}

    def cancel(
        self, promotion_id: str, environment: str = "prod", principal: str | None = REQUESTER, **extra: Any
    ) -> dict[str, Any]:
        body = {"tenant": "xy-0146", "environment": environment, "promotion_id": promotion_id, **extra}
        status, answer = self.signed("cancellations", body, principal)
        return answer | {"status": status}

    def promotion(self, environment: str = "qa") -> Promotion | None:
        return self.deps.store.get_promotion(Namespace.parse(f"xy-0146-{environment}"))

    def parked(self, environment: str = "qa") -> str | None:
        """What the promotion in flight waits for holding its lock ("instance", or a stack's name), if it does."""
        promotion = self.promotion(environment)
        waiting = [w for w in self.deps.store.waiting() if promotion is not None and w.promotion_id == promotion.id]
        return (waiting[0].stack or "instance") if waiting else None

    def active(self, environment: str = "qa") -> str | None:
        version = self.deps.store.get_active(Namespace.parse(f"xy-0146-{environment}"))
        return version.value if version else None

    def stack_event(self, version: str, status: str, environment: str = "qa", reason: str = "") -> dict[str, Any]:
        name = Namespace.parse(f"xy-0146-{environment}").stack_name(Version.parse(version))
        return self.invoke("stack_status", self.events.stack_status(name, status, reason))

    def deployment_event(
        self, outcome: str, environment: str = "qa", deployment_id: str | None = None
    ) -> dict[str, Any]:
        if deployment_id is None:
            promotion = self.promotion(environment)
            assert promotion is not None, "no promotion in flight"
            deployment_id = promotion.deployment_id
        dep_id = deployment_id
        cluster = "common-prod" if environment == "prod" else "common-nonprod"
        event = self.events.deployment(dep_id, outcome, cluster=cluster, service=f"xy-0146-{environment}")
        return self.invoke("deployment_state", event)

    def promote(self, version: str, environment: str = "qa", outcome: str = "COMPLETED", **extra: Any) -> None:
        """One whole promotion, every stage fed its event."""
        self.request(environment, version, **extra)
        self.stack_event(version, "CREATE_COMPLETE", environment)
        self.deployment_event(outcome, environment)

    def stacks(self) -> dict[str, str]:
        """The DB stacks (the common and environment stacks of the bootstrap are left out)."""
        pages = self.session.client("cloudformation").get_paginator("describe_stacks").paginate()
        return {
            s["StackName"]: s["StackStatus"]
            for page in pages
            for s in page["Stacks"]
            if s["StackStatus"] != "DELETE_COMPLETE" and "-db-" in s["StackName"]  # not the world's stacks
        }

    def service(self, environment: str = "qa") -> dict[str, Any]:
        cluster = "common-prod" if environment == "prod" else "common-nonprod"
        ecs = self.session.client("ecs")
        return ecs.describe_services(cluster=cluster, services=[f"xy-0146-{environment}"])["services"][0]

    def container_env(self, task_definition: str) -> dict[str, str]:
        td = self.session.client("ecs").describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
        container = next(c for c in td["containerDefinitions"] if c["name"] == "app")
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        env.update({s["name"]: s["valueFrom"] for s in container.get("secrets", [])})
        env["image"] = container["image"]
        return env


def call(name: str, event: dict[str, Any], deps: Deps | None = None) -> Any:
    """A handler's use case called directly with a raw event, parsed as ``entry.run`` parses it (no
    invocation context, no log line): for tests that look at the use case's :class:`Result`."""
    from chalicelib.deps import get_deps
    from chalicelib.domain import events as ev
    from chalicelib.usecases import commands, deployment_state, requests, snapshots, stack_status
    from chalicelib.usecases.transitions import ignore

    use_cases: dict[str, tuple[Any, Any, Any]] = {
        "promotion_requested": (requests.on_promotion_requested, ev.PromotionRequest.parse, requests.reject_input),
        "promotion_approved": (commands.on_promotion_approved, ev.Command.parse, requests.reject_input),
        "promotion_cancelled": (commands.on_promotion_cancelled, ev.Command.parse, requests.reject_input),
        "snapshot_requested": (
            snapshots.request_snapshot,
            ev.SnapshotRequest.parse,
            snapshots.snapshot_request_invalid,
        ),
        "snapshot_created": (snapshots.on_snapshot_created, ev.RdsSnapshotEvent.parse, None),
        "stack_status": (stack_status.on_stack_status, ev.StackStatusEvent.parse, None),
        "deployment_state": (deployment_state.on_deployment_state, ev.DeploymentEvent.parse, None),
    }
    use_case, parse, invalid = use_cases[name]
    deps = deps or get_deps()
    try:
        command = parse(event)
    except ev.InvalidEvent as exc:
        return invalid(deps, event, str(exc)) if invalid else ignore(str(exc))
    return use_case(deps, command)
