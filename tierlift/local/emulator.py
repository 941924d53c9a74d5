"""Emulated AWS behaviour on top of moto: asynchronous states, durations and AWS's events.

moto changes state at once and emits no RDS, CloudFormation or ECS events. The patched moto backends
(:mod:`tierlift.moto_patches`) tell this :class:`Emulator` what just happened; it sets the status AWS
would show now (``creating``, ``CREATE_IN_PROGRESS``, ``DELETE_IN_PROGRESS``, ``IN_PROGRESS``), moves
it on after a realistic duration divided by ``speed``, and puts AWS's events into moto's EventBridge,
whose rules route them.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tierlift import moto_patches
from tierlift.local import awsevents
from tierlift.local.faults import Faults

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Durations:
    """How long things take in AWS, in seconds (divided by ``speed`` locally)."""

    snapshot: float = 240.0  # manual / automated snapshot: creating -> available
    snapshot_copy: float = 420.0  # CopyDBSnapshot (encrypting a copy): copying -> available
    stack_create: float = 600.0  # DB stack restored from a snapshot: CREATE_IN_PROGRESS -> CREATE_COMPLETE
    stack_fail: float = 300.0  # a failing create: CREATE_IN_PROGRESS -> ROLLBACK_IN_PROGRESS
    stack_rollback: float = 180.0  # ROLLBACK_IN_PROGRESS -> ROLLBACK_COMPLETE
    stack_delete: float = 300.0  # DELETE_IN_PROGRESS -> DELETE_COMPLETE
    deployment: float = 240.0  # ECS deployment: IN_PROGRESS -> COMPLETED
    deployment_fail: float = 360.0  # unhealthy tasks: IN_PROGRESS -> FAILED (circuit breaker)


Emit = Callable[[dict[str, Any], str, str], None]
"""Put one PutEvents entry into EventBridge of (account, region)."""


class Emulator:
    """Implements :class:`tierlift.moto_patches.Observer`; runs its timers in one thread."""

    def __init__(
        self,
        lock: threading.RLock,
        emit: Emit,
        *,
        speed: float = 600.0,
        durations: Durations | None = None,
        faults: Callable[[], Faults] = Faults,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.on_error = on_error
        self.lock = lock
        self.emit = emit
        self.speed = max(float(speed), 0.001)
        self.durations = durations or Durations()
        self.faults = faults
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation: dict[str, int] = {}

    # timers -----------------------------------------------------------------------------------
    def after(self, aws_seconds: float, step: Callable[[], None]) -> None:
        """Run ``step`` (under the cloud's lock) after ``aws_seconds`` of AWS time."""
        due = time.monotonic() + aws_seconds / self.speed
        with self._cv:
            heapq.heappush(self._timers, (due, next(self._seq), step))
            self._cv.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tierlift-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify()
        if self._thread:
            self._thread.join(timeout=5)

    def idle(self) -> bool:
        with self._cv:
            return not self._timers

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                if not self._timers:
                    self._cv.wait(timeout=0.5)
                    continue
                due, _, step = self._timers[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cv.wait(timeout=min(wait, 0.5))
                    continue
                heapq.heappop(self._timers)
            try:
                with self.lock:
                    step()
            except Exception as exc:  # an emulation bug must not kill the cloud
                logger.exception("emulator step failed")
                if self.on_error is not None:
                    self.on_error(f"{type(exc).__name__}: {exc}")

    def _put(self, entry: dict[str, Any], account: str, region: str) -> None:
        self.emit(entry, account, region)

    # RDS snapshots ----------------------------------------------------------------------------
    def on_snapshot(self, snapshot: Any) -> None:
        automated = snapshot.snapshot_type == "automated"
        started, created = ("RDS-EVENT-0090", "RDS-EVENT-0091") if automated else ("RDS-EVENT-0040", "RDS-EVENT-0042")
        snapshot.status = "creating"
        snapshot.percent_progress = 0
        account, region = snapshot.backend.account_id, snapshot.backend.region_name
        name = snapshot.db_snapshot_identifier

        def begin() -> None:
            self._put(awsevents.rds_snapshot(started, name, region, awsevents.now(), account), account, region)

        def finish() -> None:
            if snapshot.backend.database_snapshots.get(name) is not snapshot:
                return  # deleted meanwhile
            snapshot.status = "available"
            snapshot.percent_progress = 100
            self._put(awsevents.rds_snapshot(created, name, region, awsevents.now(), account), account, region)

        self.after(0, begin)
        self.after(self.durations.snapshot, finish)

    def on_snapshot_copied(self, snapshot: Any) -> None:
        """CopyDBSnapshot: ``copying`` until it is done, then available and RDS-EVENT-0197 (a local copy
        finished); RDS-EVENT-0196 when it starts."""
        snapshot.status = "copying"
        snapshot.percent_progress = 0
        account, region = snapshot.backend.account_id, snapshot.backend.region_name
        name = snapshot.db_snapshot_identifier

        def begin() -> None:
            self._put(awsevents.rds_snapshot("RDS-EVENT-0196", name, region, awsevents.now(), account), account, region)

        def finish() -> None:
            if snapshot.backend.database_snapshots.get(name) is not snapshot:
                return  # deleted meanwhile
            snapshot.status = "available"
            snapshot.percent_progress = 100
            self._put(awsevents.rds_snapshot("RDS-EVENT-0197", name, region, awsevents.now(), account), account, region)

        self.after(0, begin)
        self.after(self.durations.snapshot_copy, finish)

    def on_snapshot_deleted(self, snapshot: Any) -> None:
        if snapshot is None or snapshot.snapshot_type != "manual":
            return
        account, region = snapshot.backend.account_id, snapshot.backend.region_name
        name = snapshot.db_snapshot_identifier
        self.after(
            0,
            lambda: self._put(
                awsevents.rds_snapshot("RDS-EVENT-0041", name, region, awsevents.now(), account), account, region
            ),
        )

    def on_instance_deleted(self, instance: Any) -> None:
        account, region = instance.backend.account_id, instance.backend.region_name
        name = instance.db_instance_identifier
        self.after(
            0,
            lambda: self._put(
                awsevents.rds_instance(
                    "RDS-EVENT-0003", name, "DB instance deleted", "deletion", region, awsevents.now(), account
                ),
                account,
                region,
            ),
        )

    # CloudFormation stacks --------------------------------------------------------------------
    def stack_failure(self, stack_name: str, account_id: str | None = None) -> str | None:
        from tierlift.local import quotas  # RDS's DB-instance quota (InstanceQuotaExceeded), when enforced

        return self.faults().stack_failure(stack_name) or quotas.stack_failure(account_id)

    def _bump(self, stack: Any) -> int:
        generation = self._generation.get(stack.stack_id, 0) + 1
        self._generation[stack.stack_id] = generation
        return generation

    def _current(self, stack: Any, generation: int) -> bool:
        return self._generation.get(stack.stack_id) == generation

    @staticmethod
    def _instances(stack: Any) -> list[Any]:
        from moto.rds.models import DBInstance

        return [r for r in stack.resource_map._parsed_resources.values() if isinstance(r, DBInstance)]

    def _stack_event(self, stack: Any, status: str, reason: str = "", token: str | None = None) -> None:
        if token is None:
            token = getattr(stack, "_tierlift_token", "") if status.startswith(("CREATE", "ROLLBACK")) else ""
        self._put(
            awsevents.stack_status(stack.stack_id, status, reason, awsevents.now(), token or ""),
            stack.account_id,
            stack.region_name,
        )

    def on_stack_created(self, stack: Any, failure: str | None) -> None:
        generation = self._bump(stack)
        # moto finished synchronously and logged CREATE_COMPLETE: take that back.
        stack.events[:] = [
            e
            for e in stack.events
            if not (e.resource_status == "CREATE_COMPLETE" and e.logical_resource_id == stack.name)
        ]
        stack.status = "CREATE_IN_PROGRESS"
        for instance in self._instances(stack):
            instance.status = "creating"
        self.after(0, lambda: self._stack_event(stack, "CREATE_IN_PROGRESS", "User Initiated"))
        if failure is None:
            self.after(self.durations.stack_create, lambda: self._stack_created(stack, generation))
        else:
            self.after(self.durations.stack_fail, lambda: self._stack_failed(stack, generation, failure))

    def _stack_created(self, stack: Any, generation: int) -> None:
        if not self._current(stack, generation) or stack.status != "CREATE_IN_PROGRESS":
            return
        when = awsevents.now()
        for instance in self._instances(stack):
            instance.status = "available"
            snapshot = stack.resource_map._resource_json_map.get(instance.logical_resource_id, {})
            source = (snapshot.get("Properties") or {}).get("DBSnapshotIdentifier")
            params = stack.resource_map.resolved_parameters
            if isinstance(source, dict) and "Ref" in source:
                source = params.get(source["Ref"])
            if source:
                self._put(
                    awsevents.rds_instance(
                        "RDS-EVENT-0043",
                        instance.db_instance_identifier,
                        f"Restored from snapshot {source}",
                        "restoration",
                        stack.region_name,
                        when,
                        stack.account_id,
                    ),
                    stack.account_id,
                    stack.region_name,
                )
        stack.status = "CREATE_COMPLETE"
        stack._add_stack_event("CREATE_COMPLETE")
        self._stack_event(stack, "CREATE_COMPLETE")

    def _stack_failed(self, stack: Any, generation: int, reason: str) -> None:
        if not self._current(stack, generation) or stack.status != "CREATE_IN_PROGRESS":
            return
        logical_id = getattr(stack, "_tierlift_failed_resource", None) or "DBInstance"
        resource_type = (stack.resource_map._resource_json_map.get(logical_id) or {}).get(
            "Type", "AWS::RDS::DBInstance"
        )
        self._put(
            awsevents.resource_status(
                stack.stack_id, logical_id, "", resource_type, "CREATE_FAILED", reason, awsevents.now()
            ),
            stack.account_id,
            stack.region_name,
        )
        self._resource_failed_event(stack, logical_id, resource_type, reason)
        if stack.disable_rollback:
            stack.status = "CREATE_FAILED"
            stack._add_stack_event("CREATE_FAILED", f"The following resource(s) failed to create: [{logical_id}]. ")
            self._stack_event(stack, "CREATE_FAILED", f"The following resource(s) failed to create: [{logical_id}]. ")
            return
        why = f"The following resource(s) failed to create: [{logical_id}]. Rollback requested by user."
        stack.status = "ROLLBACK_IN_PROGRESS"
        stack._add_stack_event("ROLLBACK_IN_PROGRESS", why)
        self._stack_event(stack, "ROLLBACK_IN_PROGRESS", why)
        self.after(self.durations.stack_rollback, lambda: self._stack_rolled_back(stack, generation))

    @staticmethod
    def _resource_failed_event(stack: Any, logical_id: str, resource_type: str, reason: str) -> None:
        """The resource's CREATE_FAILED in DescribeStackEvents, with its reason (as CloudFormation lists it)."""
        from moto.cloudformation.models import Event

        stack.events.append(
            Event(
                stack_id=stack.stack_id,
                stack_name=stack.name,
                logical_resource_id=logical_id,
                physical_resource_id="",
                resource_type=resource_type,
                resource_status="CREATE_FAILED",
                resource_status_reason=reason,
                resource_properties=None,
            )
        )

    def _stack_rolled_back(self, stack: Any, generation: int) -> None:
        if not self._current(stack, generation):
            return
        moto_patches.roll_back_stack(stack)
        stack.status = "ROLLBACK_COMPLETE"
        stack._add_stack_event("ROLLBACK_COMPLETE")
        self._stack_event(stack, "ROLLBACK_COMPLETE")

    def on_stack_delete(self, stack: Any) -> bool:
        from moto.cloudformation.models import cloudformation_backends

        generation = self._bump(stack)  # cancels a create still in progress
        for instance in self._instances(stack):
            instance.status = "deleting"
        backend = cloudformation_backends[stack.account_id][stack.region_name]
        self.after(0, lambda: self._stack_event(stack, "DELETE_IN_PROGRESS", "User Initiated"))

        def finish() -> None:
            if not self._current(stack, generation):
                return
            moto_patches.finish_stack_delete(backend, stack)
            self._stack_event(stack, "DELETE_COMPLETE")

        self.after(self.durations.stack_delete, finish)
        return True

    # ECS deployments --------------------------------------------------------------------------
    @staticmethod
    def _images(service: Any, task_definition: str | None) -> list[str]:
        if not task_definition:
            return []
        try:
            definition = service._backend.describe_task_definition(task_definition)
        except Exception:  # a task definition deregistered meanwhile
            return []
        return [tagged for c in definition.container_definitions for tagged in _by_tag(str(c.get("image", "")))]

    def _deployment_event(self, service: Any, deployment: dict[str, Any], name: str, reason: str | None = None) -> None:
        self._put(
            awsevents.ecs_deployment(
                name,
                deployment["id"],
                service.cluster_name,
                service.name,
                service.region_name,
                awsevents.now(),
                reason,
                service._account_id,
            ),
            service._account_id,
            service.region_name,
        )

    def on_deployment(self, service: Any, deployment: dict[str, Any]) -> None:
        deployment["rolloutState"] = "IN_PROGRESS"
        deployment["rolloutStateReason"] = f"ECS deployment {deployment['id']} in progress."
        deployment["runningCount"] = 0
        deployment["pendingCount"] = service.desired_count
        self.after(0, lambda: self._deployment_event(service, deployment, "SERVICE_DEPLOYMENT_IN_PROGRESS"))
        unhealthy = any(moto_patches.is_unhealthy_image(i) for i in self._images(service, deployment["taskDefinition"]))
        if unhealthy:
            self.after(self.durations.deployment_fail, lambda: self._deployment_failed(service, deployment))
        else:
            self.after(self.durations.deployment, lambda: self._deployment_completed(service, deployment))

    @staticmethod
    def _is_primary(service: Any, deployment: dict[str, Any]) -> bool:
        return any(d is deployment and d.get("status") == "PRIMARY" for d in service.deployments)

    def _deployment_completed(self, service: Any, deployment: dict[str, Any]) -> None:
        if not self._is_primary(service, deployment) or service.status != "ACTIVE":
            return  # superseded by a newer deployment, or the service is gone
        now = awsevents.now()
        deployment.update(
            rolloutState="COMPLETED",
            rolloutStateReason=f"ECS deployment {deployment['id']} completed.",
            runningCount=service.desired_count,
            pendingCount=0,
            updatedAt=now,
        )
        service.deployments[:] = [deployment]
        service.running_count = service.desired_count
        service.pending_count = 0
        self._deployment_event(service, deployment, "SERVICE_DEPLOYMENT_COMPLETED")

    def _deployment_failed(self, service: Any, deployment: dict[str, Any]) -> None:
        if not self._is_primary(service, deployment) or service.status != "ACTIVE":
            return
        breaker = (getattr(service, "deployment_configuration", None) or {}).get("deploymentCircuitBreaker") or {}
        if not breaker.get("enable"):
            # Without the circuit breaker ECS keeps replacing failing tasks: the deployment never ends.
            deployment["failedTasks"] = int(deployment.get("failedTasks", 0)) + service.desired_count
            return
        now = awsevents.now()
        deployment.update(
            rolloutState="FAILED",
            rolloutStateReason="ECS deployment circuit breaker: task failed to start.",
            failedTasks=int(deployment.get("failedTasks", 0)) + service.desired_count,
            runningCount=0,
            updatedAt=now,
        )
        self._deployment_event(service, deployment, "SERVICE_DEPLOYMENT_FAILED")
        previous = next((d for d in service.deployments if d is not deployment and d.get("taskDefinition")), None)
        if not breaker.get("rollback") or previous is None:
            return
        # Circuit-breaker rollback: a new deployment of the last good task definition.
        from moto.moto_api._internal import mock_random

        rollback_id = f"ecs-svc/{mock_random.randint(10**18, 10**19 - 1)}"
        rollback = dict(
            previous,
            id=rollback_id,
            status="PRIMARY",
            createdAt=now,
            updatedAt=now,
            failedTasks=0,
        )
        deployment["status"] = "ACTIVE"
        service.deployments[:] = [rollback, deployment]
        service.task_definition = previous["taskDefinition"]
        rollback["rolloutState"] = "IN_PROGRESS"
        rollback["rolloutStateReason"] = (
            f"ECS deployment circuit breaker: rolling back to deploymentId {previous['id']}."
        )
        self._put(
            awsevents.ecs_deployment(
                "SERVICE_DEPLOYMENT_IN_PROGRESS",
                rollback_id,
                service.cluster_name,
                service.name,
                service.region_name,
                now,
                f"ECS deployment circuit breaker: rolling back to deploymentId {previous['id']}.",
                service._account_id,
            ),
            service._account_id,
            service.region_name,
        )
        self.after(self.durations.deployment, lambda: self._deployment_completed(service, rollback))


def _by_tag(image: str) -> list[str]:
    """An ECR image named by digest, as the tags moto's ECR holds for that digest (what the local rule
    of unhealthy images reads); any other reference as it is."""
    from moto.ecr.models import ecr_backends

    from chalicelib.domain.images import EcrImage

    ecr = EcrImage.parse(image)
    if ecr is None or ecr.digest is None:
        return [image]
    repository = ecr_backends[ecr.account][ecr.region].repositories.get(ecr.repository)
    images = repository.images if repository is not None else []
    tags = [tag for found in images if found.image_digest == ecr.digest for tag in found.image_tags]
    return [f"{ecr.registry}/{ecr.repository}:{tag}" for tag in tags] or [image]
