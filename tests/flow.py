"""Drive the pipeline stage by stage through the real handlers (``chalice.test.Client``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import boto3
from chalice.test import Client

from app import app
from chalicelib.deps import Deps
from chalicelib.names import Namespace, Version
from chalicelib.state import Promotion
from tests.conftest import Events, Outbox, take_source_snapshot


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

    def request(self, environment: str = "qa", version: str | None = None, **extra: Any) -> dict[str, Any]:
        event = self.events.promotion_requested(tenant="xy-0146", environment=environment, version=version, **extra)
        return self.invoke("promotion_requested", event) | {"event": event}

    def promotion(self, environment: str = "qa") -> Promotion | None:
        return self.deps.store.get_promotion(Namespace.parse(f"xy-0146-{environment}"))

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
