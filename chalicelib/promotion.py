"""The promotion's use cases: one function per handler, each idempotent and safe to re-run.

Shape of every function: load the recorded state and the real AWS facts, ask :mod:`chalicelib.decisions`
what to do, carry out the actions (each idempotent), record state, put tierlift events. A crash between
any two AWS calls leaves a promotion record whose ``stage`` says which step to finish on re-delivery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import events as ev
from chalicelib.aws import OutboundEvent, Stacks, error_code
from chalicelib.config import InvalidConfig, Target, TenantConfig
from chalicelib.decisions import Action, decide_deployment, decide_request, decide_stack, resume_stage
from chalicelib.deps import Deps
from chalicelib.names import (
    KIND_TAG,
    PROMOTION_TAG,
    VERSION_TAG,
    InvalidName,
    Namespace,
    Version,
    Versioned,
)
from chalicelib.state import DbRecord, Promotion, QueuedRequest, Recorded, UnknownTenant

logger = logging.getLogger(__name__)

# Keys of a DescribeTaskDefinition result that RegisterTaskDefinition accepts back.
_TASK_DEFINITION_KEYS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
)
DB_ENVIRONMENT = ("DB_HOST", "DB_PORT", "DB_NAME", "TIERLIFT_VERSION")
DB_SECRETS = ("TIERLIFT_DB", "DB_USER", "DB_PASSWORD")


@dataclass(frozen=True)
class Outcome:
    """What a handler did, for the log line and for tests."""

    action: str
    reason: str = ""
    promotion_id: str | None = None
    namespace: str | None = None

    def as_log(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


class PromotionError(RuntimeError):
    """A deterministic problem (config, missing container, foreign stack) that fails the promotion."""


def _now(deps: Deps) -> str:
    return deps.clock().isoformat(timespec="seconds")


def _event(record: Promotion | QueuedRequest, detail_type: str, **extra: Any) -> OutboundEvent:
    """One of tierlift's events about a promotion, or about a request not (yet) promoted."""
    return ev.outbound(
        detail_type,
        tenant=record.tenant,
        environment=record.environment,
        promotion_id=record.id,
        version=record.version,
        **extra,
    )


def _save(deps: Deps, promotion: Promotion, stage: str, **changes: Any) -> None:
    promotion.stage = stage
    for key, value in changes.items():
        setattr(promotion, key, value)
    promotion.updated = _now(deps)
    deps.store.save_promotion(promotion)


# --------------------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------------------
def reject(deps: Deps, raw: Any, reason: str) -> Outcome:
    """Put ``Promotion Rejected`` for a request; the only AWS call a rejected request causes."""
    detail = raw.get("detail") if isinstance(raw, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    request_id = raw.get("id") if isinstance(raw, dict) else None
    logger.warning("promotion rejected: %s", reason, extra={"reason": reason})
    deps.bus.put(
        [
            ev.outbound(
                ev.PROMOTION_REJECTED,
                tenant=ev.safe(detail.get("tenant")),
                environment=ev.safe(detail.get("environment")),
                promotion_id=ev.safe(request_id),
                version=ev.safe(detail.get("version")) if detail.get("version") is not None else None,
                reason=reason,
            )
        ]
    )
    return Outcome("reject", reason, ev.safe(request_id))


# --------------------------------------------------------------------------------------------------
# Snapshot Requested
# --------------------------------------------------------------------------------------------------
def request_snapshot(deps: Deps, event: Any) -> Outcome:
    """Take a manual snapshot of the tenant's source DB, named for the request's time (the version).

    The name comes from the event's ``time``, which is the same on every re-delivery, so a duplicate
    finds the snapshot already there and does nothing.
    """
    try:
        request = ev.SnapshotRequest.parse(event)
        config = deps.store.get_config(request.tenant)
    except (ev.InvalidEvent, UnknownTenant, InvalidConfig) as exc:
        logger.warning("snapshot request ignored: %s", exc)
        return Outcome("ignore", str(exc))
    version = Version.from_datetime(request.time)
    source = config.source
    snapshot_id = source.snapshot_id(version)
    tags = source.tags(version, **{KIND_TAG: "source-snapshot", "tierlift:requested-by": request.requested_by})
    try:
        created = deps.rds.create_snapshot(snapshot_id, config.source_db_instance, tags)
    except ClientError as exc:
        if error_code(exc) in ("DBInstanceNotFound", "InvalidDBInstanceState", "SnapshotQuotaExceeded"):
            logger.error("snapshot %s not taken: %s", snapshot_id, exc)
            return Outcome("ignore", f"snapshot not taken: {error_code(exc)}", namespace=source.name)
        raise
    return Outcome(
        "snapshot" if created else "ignore", "" if created else "duplicate: snapshot exists", None, snapshot_id
    )


# --------------------------------------------------------------------------------------------------
# RDS snapshot created -> Promotion Requested for the automatic environments
# --------------------------------------------------------------------------------------------------
def on_snapshot_created(deps: Deps, event: Any) -> Outcome:
    try:
        rds_event = ev.RdsSnapshotEvent.parse(event)
    except ev.InvalidEvent as exc:
        return _ignore(str(exc))
    if rds_event.event_id != ev.MANUAL_SNAPSHOT_CREATED or rds_event.source_type != "SNAPSHOT":
        return _ignore(f"{rds_event.event_id} of {rds_event.source_type} is not a manual snapshot completing")
    try:
        snapshot = Versioned.parse_snapshot(rds_event.snapshot_id)
        config = deps.store.get_config(snapshot.namespace.tenant)
    except (InvalidName, UnknownTenant, InvalidConfig) as exc:
        return _ignore(f"snapshot {ev.safe(rds_event.snapshot_id)}: {exc}")
    if snapshot.namespace.environment != config.source_environment:
        return _ignore(f"snapshot {snapshot.snapshot_id} is not of the source environment {config.source_environment}")
    reason = check_source_snapshot(deps, config, snapshot.version)
    if reason:
        return _ignore(reason)
    requests = [
        ev.promotion_requested(
            tenant=config.tenant.name,
            environment=env,
            version=snapshot.version.value,
            requested_by=f"tierlift:snapshot/{snapshot.snapshot_id}",
        )
        for env in config.automatic
    ]
    if requests:
        deps.bus.put(requests)
    return Outcome(
        "request", f"{len(requests)} automatic promotion(s) of {snapshot.version}", namespace=snapshot.snapshot_id
    )


def _ignore(reason: str, namespace: str | None = None, promotion_id: str | None = None) -> Outcome:
    logger.info("ignored: %s", reason)
    return Outcome("ignore", reason, promotion_id, namespace)


def check_source_snapshot(deps: Deps, config: TenantConfig, version: Version) -> str | None:
    """None when the source snapshot of ``version`` exists, is available and is of the source DB."""
    snapshot_id = config.source.snapshot_id(version)
    snapshot = deps.rds.describe_snapshot(snapshot_id)
    if snapshot is None:
        return f"source snapshot {snapshot_id} does not exist"
    if snapshot.get("DBInstanceIdentifier") != config.source_db_instance:
        owner = snapshot.get("DBInstanceIdentifier")
        return f"snapshot {snapshot_id} is of {owner}, not the source DB {config.source_db_instance}"
    if snapshot.get("Status") != "available":
        return f"source snapshot {snapshot_id} is {snapshot.get('Status')}, not available"
    return None


def newest_source_version(deps: Deps, config: TenantConfig) -> Version | None:
    newest: Version | None = None
    for snapshot in deps.rds.snapshots(instance_id=config.source_db_instance):
        try:
            parsed = Versioned.parse_snapshot(snapshot.get("DBSnapshotIdentifier"))
        except InvalidName:
            continue
        if parsed.namespace != config.source or snapshot.get("Status") != "available":
            continue
        if newest is None or parsed.version > newest:
            newest = parsed.version
    return newest


def resolve_version(deps: Deps, config: TenantConfig, environment: str, requested: Version | None) -> Version:
    """The requested version, or the newest the environment before holds (the source: newest snapshot)."""
    if requested is not None:
        return requested
    before = config.environment_before(environment)
    if before == config.source_environment:
        version = newest_source_version(deps, config)
        if version is None:
            raise PromotionError(f"no available source snapshot of {config.source_db_instance}")
        return version
    version = deps.store.get_active(config.namespace(before))
    if version is None:
        raise PromotionError(f"environment {before} (before {environment}) has no active version to promote")
    return version


# --------------------------------------------------------------------------------------------------
# Promotion Requested
# --------------------------------------------------------------------------------------------------
def on_promotion_requested(deps: Deps, event: Any) -> Outcome:
    try:
        request = ev.PromotionRequest.parse(event)
    except ev.InvalidEvent as exc:
        return reject(deps, event, str(exc))
    return request_promotion(deps, request, event)


def request_promotion(deps: Deps, request: ev.PromotionRequest, raw: Any, *, from_queue: bool = False) -> Outcome:
    ns = request.tenant.namespace(request.environment)
    try:
        recorded = deps.store.recorded(ns)
        config = recorded.config()
        config.target(request.environment)
        in_flight = recorded.promotion
        if in_flight is not None and in_flight.id == request.id:
            version = in_flight.version_
        else:
            version = resolve_version(deps, config, request.environment, request.version)
            problem = check_source_snapshot(deps, config, version)
            if problem:
                raise PromotionError(problem)
        active = recorded.active
    except (UnknownTenant, InvalidConfig, PromotionError, InvalidName) as exc:
        return reject(deps, raw, str(exc))
    queued = recorded.queued
    decision = decide_request(
        request_id=request.id,
        version=version.value,
        active=active.value if active else None,
        in_flight=in_flight,
        queued_id=queued.id if queued and not from_queue else None,
    )
    if decision.action is Action.REJECT:
        return reject(deps, raw, decision.reason)
    if decision.action is Action.IGNORE:
        return _ignore(decision.reason, ns.name, request.id)
    if decision.action is Action.QUEUE:
        return _queue(deps, ns, request, queued, decision.reason)
    if decision.action is Action.RESUME:
        assert in_flight is not None
        return _create_stack(deps, config, in_flight)
    promotion = Promotion(
        id=request.id,
        tenant=request.tenant.name,
        environment=request.environment,
        version=version.value,
        stage="requested",
        previous=active.value if active else None,
        requested_by=request.requested_by,
        image=request.image,
        started=_now(deps),
        updated=_now(deps),
    )
    if not deps.store.create_promotion(promotion):
        # Lost a race with another request: it holds the lock now, so this one waits in the queue.
        return _queue(deps, ns, request, deps.store.get_queued(ns), "environment became busy")
    if queued is not None and queued.id != request.id and not from_queue:
        _supersede(deps, ns, queued, request.id)
    return _create_stack(deps, config, promotion)


def _supersede(deps: Deps, ns: Namespace, old: QueuedRequest, by: str) -> None:
    deps.bus.put([_event(old, ev.PROMOTION_REJECTED, reason=f"superseded by {by}")])
    deps.store.delete_queued(ns, old.id)


def _queue(deps: Deps, ns: Namespace, request: ev.PromotionRequest, old: QueuedRequest | None, why: str) -> Outcome:
    entry = QueuedRequest(
        id=request.id,
        tenant=request.tenant.name,
        environment=request.environment,
        version=request.version.value if request.version else None,
        image=request.image,
        requested_by=request.requested_by,
        queued_at=_now(deps),
    )
    deps.store.put_queued(ns, entry)
    out = [_event(entry, ev.PROMOTION_QUEUED, reason=why)]
    if old is not None and old.id != request.id:
        out.append(_event(old, ev.PROMOTION_REJECTED, reason=f"superseded by {request.id}"))
    deps.bus.put(out)
    # The promotion in flight may have ended between our read and the write: start the queue ourselves.
    if deps.store.get_promotion(ns) is None:
        drain_queue(deps, ns)
    return Outcome("queue", why, request.id, ns.name)


def stack_parameters(config: TenantConfig, promotion: Promotion) -> dict[str, str]:
    target = config.target(promotion.environment)
    version = promotion.version_
    ns = promotion.namespace
    return {
        "Tenant": ns.tenant.name,
        "Environment": ns.environment,
        "Customer": ns.tenant.customer,
        "Project": ns.tenant.project,
        "Version": version.value,
        "SnapshotIdentifier": config.source.snapshot_id(version),
        "InstanceIdentifier": ns.instance_id(version),
        "InstanceClass": target.db.instance_class,
        "SubnetGroup": target.db.subnet_group,
        "SecurityGroups": ",".join(target.db.security_groups),
    }


def _create_stack(deps: Deps, config: TenantConfig, promotion: Promotion) -> Outcome:
    ns, version = promotion.namespace, promotion.version_
    name = ns.stack_name(version)
    tags = ns.tags(version, **{PROMOTION_TAG: promotion.id, KIND_TAG: "db-stack"})
    created = deps.stacks.create(name, deps.template, stack_parameters(config, promotion), tags, promotion.id)
    if not created:
        existing = deps.stacks.describe(name)
        owner = Stacks.tags(existing).get(PROMOTION_TAG) if existing else None
        if existing is not None and owner != promotion.id:
            # Never adopt (or delete) a stack this promotion did not create.
            return fail(
                deps, promotion, f"stack {name} already exists (promotion {owner}); not touching it", remove_stack=False
            )
    _save(deps, promotion, "restoring")
    deps.bus.put([_event(promotion, ev.PROMOTION_STARTED, previous=promotion.previous, stack=name)])
    return Outcome("start", f"creating {name}", promotion.id, ns.name)


# --------------------------------------------------------------------------------------------------
# Queue
# --------------------------------------------------------------------------------------------------
def drain_queue(deps: Deps, ns: Namespace) -> Outcome | None:
    """Start the queued request if the environment is free. Safe to call any time, any number of times."""
    queued = deps.store.get_queued(ns)
    if queued is None:
        return None
    in_flight = deps.store.get_promotion(ns)
    if in_flight is not None:
        if in_flight.id == queued.id:
            deps.store.delete_queued(ns, queued.id)
        return None
    raw = {
        "id": queued.id,
        "detail": {
            "tenant": queued.tenant,
            "environment": queued.environment,
            "version": queued.version,
            "image": queued.image,
            "requested_by": queued.requested_by,
        },
    }
    try:
        request = ev.PromotionRequest.parse(raw)
    except ev.InvalidEvent as exc:
        outcome = reject(deps, raw, f"queued request unreadable: {exc}")
    else:
        outcome = request_promotion(deps, request, raw, from_queue=True)
    deps.store.delete_queued(ns, queued.id)
    return outcome


# --------------------------------------------------------------------------------------------------
# CloudFormation Stack Status Change
# --------------------------------------------------------------------------------------------------
def on_stack_status(deps: Deps, event: Any) -> Outcome:
    try:
        status_event = ev.StackStatusEvent.parse(event)
        stack = Versioned.parse_stack(status_event.stack_name)
    except (ev.InvalidEvent, InvalidName) as exc:
        return _ignore(f"not a tierlift DB stack event: {exc}")
    return apply_stack_status(deps, stack, status_event.status, status_event.reason)


def apply_stack_status(deps: Deps, stack: Versioned, status: str, reason: str = "") -> Outcome:
    """Act on a DB stack's status, from an event or observed by the sweep."""
    ns, version = stack.namespace, stack.version
    recorded = deps.store.recorded(ns)
    promotion, active = recorded.promotion, recorded.active
    decision = decide_stack(
        promotion=promotion, stack_version=version.value, status=status, active=active.value if active else None
    )
    if decision.action is Action.FORGET_DB:
        if deps.stacks.describe(stack.stack_name) is not None:
            return _ignore(f"stale: stack {stack.stack_name} still exists", ns.name)
        deps.store.delete_db(ns, version)
        return Outcome("forget_db", decision.reason, None, ns.name)
    if decision.action in (Action.IGNORE, Action.WAIT) or promotion is None:
        return _ignore(decision.reason, ns.name, promotion.id if promotion else None)
    live = deps.stacks.describe(stack.stack_name)
    live_status = live.get("StackStatus") if live else "DELETE_COMPLETE"
    if decision.action is Action.DEPLOY:
        if live is None or live_status != "CREATE_COMPLETE":
            return _ignore(f"stale: stack {stack.stack_name} is {live_status}", ns.name, promotion.id)
        return deploy(deps, promotion, live, recorded)
    if decision.action is Action.FAIL:
        if live_status == "CREATE_COMPLETE":
            return _ignore(f"stale: stack {stack.stack_name} is CREATE_COMPLETE", ns.name, promotion.id)
        return fail(deps, promotion, f"database stack {status}: {reason}".strip(": "))
    return _ignore(decision.reason, ns.name, promotion.id)


def task_definition_spec(
    current: dict[str, Any] | None,
    *,
    ns: Namespace,
    version: Version,
    target: Target,
    db: DbRecord,
    db_parameter: str,
    image: str | None,
) -> dict[str, Any]:
    """A copy of the service's task definition with this version's DB settings (and image).

    Without a current one (first promotion of a new environment), one is built from the target's
    ``task`` settings. Raises :class:`PromotionError` when the target container is missing.
    """
    if current is None:
        image = image or target.task.image
        if not image:
            raise PromotionError(
                f"service {target.service} does not exist and neither the request nor config has an image"
            )
        spec: dict[str, Any] = {
            "family": ns.name,
            "networkMode": "awsvpc",
            "requiresCompatibilities": [target.task.launch_type],
            "cpu": target.task.cpu,
            "memory": target.task.memory,
            "containerDefinitions": [
                {
                    "name": target.container,
                    "image": image,
                    "essential": True,
                    "portMappings": [{"containerPort": target.task.port, "protocol": "tcp"}],
                }
            ],
        }
        if target.task.execution_role_arn:
            spec["executionRoleArn"] = target.task.execution_role_arn
    else:
        spec = {k: current[k] for k in _TASK_DEFINITION_KEYS if current.get(k) not in (None, [], {})}
    containers = [dict(c) for c in spec["containerDefinitions"]]
    found = False
    for container in containers:
        if container.get("name") != target.container:
            continue
        found = True
        if image:
            container["image"] = image
        env = [e for e in container.get("environment", []) if e.get("name") not in DB_ENVIRONMENT]
        env += [
            {"name": "DB_HOST", "value": db.endpoint},
            {"name": "DB_PORT", "value": str(db.port)},
            {"name": "TIERLIFT_VERSION", "value": version.value},
        ]
        if db.database:
            env.append({"name": "DB_NAME", "value": db.database})
        container["environment"] = sorted(env, key=lambda e: e["name"])
        secrets = [s for s in container.get("secrets", []) if s.get("name") not in DB_SECRETS]
        secrets.append({"name": "TIERLIFT_DB", "valueFrom": db_parameter})
        if db.secret_arn:
            secrets.append({"name": "DB_USER", "valueFrom": f"{db.secret_arn}:username::"})
            secrets.append({"name": "DB_PASSWORD", "valueFrom": f"{db.secret_arn}:password::"})
        container["secrets"] = sorted(secrets, key=lambda s: s["name"])
    if not found:
        raise PromotionError(f"container {target.container!r} is not in the service's task definition")
    spec["containerDefinitions"] = containers
    return spec


def _primary(service: dict[str, Any]) -> dict[str, Any] | None:
    return next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), None)


def create_service_spec(target: Target, ns: Namespace, task_definition: str, tags: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "cluster": target.cluster,
        "serviceName": target.service,
        "taskDefinition": task_definition,
        "desiredCount": target.task.desired_count,
        "launchType": target.task.launch_type,
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        },
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
        "propagateTags": "SERVICE",
    }
    if target.task.subnets:
        spec["networkConfiguration"] = {
            "awsvpcConfiguration": {
                "subnets": list(target.task.subnets),
                "securityGroups": list(target.task.security_groups),
                "assignPublicIp": "DISABLED",
            }
        }
    return spec


def deploy(deps: Deps, promotion: Promotion, stack: dict[str, Any], recorded: Recorded | None = None) -> Outcome:
    """The DB stack is up: record its facts, make it active, roll the service onto it.

    ``recorded`` is the namespace's state as the caller read it in this invocation (saves the reads).
    """
    ns, version = promotion.namespace, promotion.version_
    recorded = recorded or deps.store.recorded(ns)
    try:
        config = recorded.config()
        target = config.target(ns.environment)
        outputs = Stacks.outputs(stack)
        db = DbRecord(
            stack=ns.stack_name(version),
            instance=outputs.get("InstanceId") or ns.instance_id(version),
            endpoint=outputs["EndpointAddress"],
            port=int(outputs["EndpointPort"]),
            snapshot=config.source.snapshot_id(version),
            version=version.value,
            secret_arn=target.db.secret_arn,
            database=target.db.database,
        )
        service = deps.services.describe_service(target.cluster, target.service)
        if promotion.task_definition is None:
            current = None
            if service is not None:
                current, _ = deps.services.describe_task_definition(service["taskDefinition"])
            spec = task_definition_spec(
                current,
                ns=ns,
                version=version,
                target=target,
                db=db,
                db_parameter=deps.store.db_path(ns, version),
                image=promotion.image,
            )
    except (KeyError, ValueError, UnknownTenant, InvalidConfig, PromotionError) as exc:
        return fail(deps, promotion, f"cannot deploy: {exc}")
    deps.store.put_db(ns, version, db)
    deps.store.set_active(ns, version, was=recorded.active)
    if promotion.task_definition is None:
        tags = ns.tags(version, **{PROMOTION_TAG: promotion.id, KIND_TAG: "task-definition"})
        arn = deps.services.register_task_definition(spec, tags)
        _save(
            deps,
            promotion,
            promotion.stage,
            task_definition=arn,
            previous_task_definition=service["taskDefinition"] if service else None,
        )
    assert promotion.task_definition is not None
    if service is None:
        tags = ns.tags(version, **{PROMOTION_TAG: promotion.id, KIND_TAG: "service"})
        service = deps.services.create_service(create_service_spec(target, ns, promotion.task_definition, tags))
        verb = "created"
    else:
        primary = _primary(service)
        if primary is None or primary.get("taskDefinition") != promotion.task_definition:
            service = deps.services.update_service(target.cluster, target.service, promotion.task_definition)
        verb = "updated"
    primary = _primary(service)
    if primary is None:
        return fail(deps, promotion, f"service {target.service} has no primary deployment after update")
    _save(deps, promotion, "deploying", deployment_id=primary["id"])
    deps.bus.put(
        [
            _event(promotion, ev.DATABASE_READY, endpoint=db.endpoint, port=db.port, stack=db.stack),
            _event(
                promotion,
                ev.SERVICE_DEPLOYING,
                task_definition=promotion.task_definition,
                deployment_id=primary["id"],
                service=target.service,
                cluster=target.cluster,
                service_action=verb,
            ),
        ]
    )
    return Outcome("deploy", f"service {verb}, deployment {primary['id']}", promotion.id, ns.name)


# --------------------------------------------------------------------------------------------------
# ECS Deployment State Change
# --------------------------------------------------------------------------------------------------
def on_deployment_state(deps: Deps, event: Any) -> Outcome:
    try:
        deployment = ev.DeploymentEvent.parse(event)
    except ev.InvalidEvent as exc:
        return _ignore(str(exc))
    outcomes = {ev.DEPLOYMENT_COMPLETED: "COMPLETED", ev.DEPLOYMENT_FAILED: "FAILED"}
    if deployment.event_name not in outcomes:
        return _ignore(f"{ev.safe(deployment.event_name)} needs no action")
    try:
        ns = Namespace.parse(deployment.service)
        recorded = deps.store.recorded(ns)
        config = recorded.config()
    except (InvalidName, UnknownTenant, InvalidConfig) as exc:
        return _ignore(f"service {ev.safe(deployment.service)}: {exc}")
    target = config.target_for_service(deployment.cluster, deployment.service)
    if target is None or target.environment != ns.environment:
        return _ignore(f"service {deployment.cluster}/{deployment.service} is not a target of {ns.tenant}")
    outcome = outcomes[deployment.event_name]
    return apply_deployment_outcome(deps, ns, deployment.deployment_id, outcome, deployment.reason, recorded)


def apply_deployment_outcome(
    deps: Deps, ns: Namespace, deployment_id: str, outcome: str, reason: str = "", recorded: Recorded | None = None
) -> Outcome:
    """Act on a deployment's outcome, from an event or observed by the sweep (which passes no ``recorded``)."""
    promotion = (recorded or deps.store.recorded(ns)).promotion
    decision = decide_deployment(promotion=promotion, deployment_id=deployment_id, outcome=outcome)
    if decision.action is Action.FINISH and promotion is not None:
        return finish(deps, promotion)
    if decision.action is Action.ROLL_BACK and promotion is not None:
        return roll_back(deps, promotion, reason or decision.reason)
    return _ignore(decision.reason, ns.name, promotion.id if promotion else None)


# --------------------------------------------------------------------------------------------------
# Terminal steps
# --------------------------------------------------------------------------------------------------
def delete_stack(deps: Deps, ns: Namespace, version: Version, why: str, *, owner: str | None = None) -> bool:
    """Delete a DB stack only if it is this namespace's, tierlift's, not protected and not active.

    With ``owner``, also only if that promotion created it (its ``tierlift:promotion`` tag).
    """
    active = deps.store.get_active(ns)
    name = ns.stack_name(version)
    if active == version:
        logger.error("refusing to delete %s: it is the active version (%s)", name, why)
        return False
    stack = deps.stacks.describe(name)
    if stack is None:
        return True
    tags = Stacks.tags(stack)
    if not ns.owns(tags) or tags.get(VERSION_TAG) != version.value:
        logger.error("refusing to delete %s: it lacks tierlift's tags for %s (%s)", name, ns, why)
        return False
    if owner is not None and tags.get(PROMOTION_TAG) != owner:
        logger.error("refusing to delete %s: promotion %s did not create it (%s)", name, owner, why)
        return False
    if stack.get("EnableTerminationProtection"):
        logger.error("refusing to delete %s: termination protection is on (%s)", name, why)
        return False
    if stack.get("StackStatus") == "DELETE_IN_PROGRESS":
        return True
    logger.info("deleting stack %s: %s", name, why)
    deps.stacks.delete(name)
    return True


def fail(deps: Deps, promotion: Promotion, reason: str, *, remove_stack: bool = True) -> Outcome:
    """The new DB never became usable: remove it, keep ``active``, release the lock."""
    ns = promotion.namespace
    if promotion.stage != "failed":
        _save(deps, promotion, "failed", reason=reason)
    if deps.store.get_active(ns) == promotion.version_:
        deps.store.set_active(ns, promotion.previous_version)
    if remove_stack:
        delete_stack(deps, ns, promotion.version_, f"promotion {promotion.id} failed", owner=promotion.id)
    return _end(deps, promotion, ev.PROMOTION_FAILED, "fail", reason)


def roll_back(deps: Deps, promotion: Promotion, reason: str) -> Outcome:
    """The new tasks never got healthy: old DB, old tasks and ``active`` back; new stack removed."""
    ns = promotion.namespace
    if promotion.stage != "rolled_back":
        _save(deps, promotion, "rolled_back", reason=reason)
    deps.store.set_active(ns, promotion.previous_version)
    try:
        target = deps.store.get_config(ns.tenant).target(ns.environment)
    except (UnknownTenant, InvalidConfig) as exc:
        logger.error("rollback of %s cannot check the service: %s", promotion.id, exc)
    else:
        service = deps.services.describe_service(target.cluster, target.service)
        previous_td = promotion.previous_task_definition
        primary = _primary(service) if service else None
        if service is not None and previous_td and (primary is None or primary.get("taskDefinition") != previous_td):
            deps.services.update_service(target.cluster, target.service, previous_td)
    delete_stack(deps, ns, promotion.version_, f"promotion {promotion.id} rolled back", owner=promotion.id)
    return _end(deps, promotion, ev.PROMOTION_ROLLED_BACK, "roll_back", reason)


def finish(deps: Deps, promotion: Promotion) -> Outcome:
    """New tasks are stable: delete the previous DB stack, release the lock."""
    ns = promotion.namespace
    if promotion.stage != "finalizing":
        _save(deps, promotion, "finalizing")
    previous = promotion.previous_version
    if previous is not None and previous != promotion.version_:
        delete_stack(deps, ns, previous, f"superseded by {promotion.version}")
    promotion.stage = "completed"
    return _end(deps, promotion, ev.PROMOTION_COMPLETED, "complete", "")


def _end(deps: Deps, promotion: Promotion, detail_type: str, action: str, reason: str) -> Outcome:
    deps.bus.put([_event(promotion, detail_type, reason=reason or None, previous=promotion.previous)])
    deps.store.release(promotion.namespace, promotion.id)
    drain_queue(deps, promotion.namespace)
    return Outcome(action, reason, promotion.id, promotion.namespace.name)


def resume(deps: Deps, promotion: Promotion) -> Outcome | None:
    """Finish a terminal step that a crash interrupted (used by the sweep)."""
    decision = resume_stage(promotion)
    if decision.action is Action.FAIL:
        return fail(deps, promotion, decision.reason)
    if decision.action is Action.ROLL_BACK:
        return roll_back(deps, promotion, decision.reason)
    if decision.action is Action.FINISH:
        return finish(deps, promotion)
    return None
