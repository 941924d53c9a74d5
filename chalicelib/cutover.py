"""From a held lock to a rolled service: restore the DB stack, wait for approval, cut over.

* :func:`start` creates the DB stack (idempotent: same name, same ``ClientRequestToken``) and records
  ``restoring`` with the stack's id; of two invocations doing it, the one whose entry lands puts
  ``Promotion Started``.
* :func:`on_stack_ready` either records ``awaiting_approval`` (``Approval Requested``) or deploys.
* :func:`deploy` claims ``deploying`` before its first effect: ``db/<version>``, ``active``, a task
  definition and the service update happen once per promotion, whatever the number of deliveries.
  A deterministic AWS error ends the promotion as failed (``active`` back, lock released); throttling
  and server errors propagate so Lambda retries, and the retry (same request id) takes its claim over.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import events as ev
from chalicelib import headroom
from chalicelib.aws import Stacks, error_code
from chalicelib.config import InvalidConfig, Target, TenantConfig
from chalicelib.deps import Deps
from chalicelib.ecs_spec import PromotionError, create_service_spec, primary_deployment, task_definition_spec
from chalicelib.endings import delete_stack, end
from chalicelib.names import KIND_TAG, PROMOTION_TAG, Namespace
from chalicelib.state import DbRecord, Outcome, Promotion, Recorded, Stage, UnknownTenant
from chalicelib.transitions import Result, claim, event_for, extend, ignore, record

logger = logging.getLogger(__name__)

# AWS errors that the same call would meet again: the promotion fails instead of retrying forever.
DETERMINISTIC_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "ClientException",
        "ClusterNotFoundException",
        "InvalidParameterException",
        "InvalidParameterValue",
        "PlatformTaskDefinitionIncompatibilityException",
        "PlatformUnknownException",
        "ServiceNotActiveException",
        "ServiceNotFoundException",
        "UnauthorizedOperation",
        "UnsupportedFeatureException",
        "ValidationError",
        "ValidationException",
    }
)


def stack_parameters(config: TenantConfig, promotion: Promotion) -> dict[str, str]:
    target = config.target(promotion.environment)
    version = promotion.version
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


WAITING_FOR_HEADROOM = "waiting for DB instance headroom"


def start(deps: Deps, config: TenantConfig, rec: Recorded, promotion: Promotion, *, admitted: bool = False) -> Result:
    """The lock is this promotion's: create its DB stack (when RDS has room) and record ``restoring``."""
    ns, version = promotion.namespace, promotion.version
    if not admitted and not headroom.may_start(deps, promotion):
        return park_for_headroom(deps, promotion)
    parks = sum(1 for s in promotion.log.steps if s.reason == WAITING_FOR_HEADROOM)
    if parks:
        headroom.unpark(deps, promotion)
    name = ns.stack_name(version)
    tags = ns.tags(version, **{PROMOTION_TAG: promotion.id, KIND_TAG: "db-stack"})
    # A new token for each attempt after a quota refusal (the refused stack was deleted in between).
    token = f"{promotion.id}-{parks}" if parks else promotion.id
    stack_id = deps.stacks.create(name, deps.template, stack_parameters(config, promotion), tags, token)
    if stack_id is None:
        existing = deps.stacks.describe(name)
        if existing is None:
            # Gone between the two calls (a delete just finished): the next delivery or the sweep retries.
            return ignore(f"stack {name} vanished while being created; retried on the next event", ns.name)
        owner = Stacks.tags(existing).get(PROMOTION_TAG)
        if owner != promotion.id:
            if existing.get("StackStatus") == "DELETE_IN_PROGRESS" and ns.owns(Stacks.tags(existing)):
                # An earlier promotion's stack of this version is still being deleted: restore it again
                # once it is gone (its DELETE_COMPLETE event resumes this promotion; so does the sweep).
                return Result("wait", f"stack {name} is still being deleted; restoring after it", promotion.id, ns.name)
            # Never adopt (or delete) a stack this promotion did not create.
            reason = f"stack {name} already exists (promotion {owner}); not touching it"
            return end(deps, rec, promotion, Outcome.FAILED, reason)
        stack_id = str(existing.get("StackId", ""))
    if record(deps, ns, promotion.log, Stage.RESTORING, stack_id=stack_id) is not None:
        deps.bus.put(
            [
                event_for(
                    promotion,
                    ev.PROMOTION_STARTED,
                    previous=promotion.request.previous,
                    stack=name,
                    override=promotion.request.override,
                )
            ]
        )
    return Result("start", f"creating {name}", promotion.id, ns.name)


def park_for_headroom(deps: Deps, promotion: Promotion, failed_stack: bool = False) -> Result:
    """Wait for DB-instance headroom holding the lock (stage ``requested``), in request order."""
    ns = promotion.namespace
    latest = promotion.log.latest
    already = latest is not None and latest.reason == WAITING_FOR_HEADROOM
    if not already and record(deps, ns, promotion.log, Stage.REQUESTED, reason=WAITING_FOR_HEADROOM) is not None:
        deps.bus.put([event_for(promotion, ev.PROMOTION_QUEUED, reason=WAITING_FOR_HEADROOM)])
    headroom.park(deps, promotion)
    if failed_stack:
        # RDS refused the restore for the quota: the stack goes; its DELETE_COMPLETE retries the start.
        headroom.forget_cached()
        delete_stack(deps, ns, promotion.version, WAITING_FOR_HEADROOM, active=None, owner=promotion.id)
    return Result("wait", WAITING_FOR_HEADROOM, promotion.id, ns.name)


def on_stack_ready(deps: Deps, rec: Recorded, promotion: Promotion, stack: dict[str, Any]) -> Result:
    """The DB stack is ``CREATE_COMPLETE``: ask for approval where the target wants it, else deploy."""
    ns = promotion.namespace
    try:
        target = rec.config().target(ns.environment)
    except (UnknownTenant, InvalidConfig) as exc:
        return end(deps, rec, promotion, Outcome.FAILED, f"cannot deploy: {exc}")
    if target.approval_required and promotion.stage in (Stage.REQUESTED, Stage.RESTORING):
        return _await_approval(deps, promotion, target, stack)
    if promotion.stage is Stage.AWAITING_APPROVAL:
        return ignore(f"promotion {promotion.id} waits for approval", ns.name, promotion.id)
    return deploy(deps, rec, promotion, stack)


def _await_approval(deps: Deps, promotion: Promotion, target: Target, stack: dict[str, Any]) -> Result:
    ns = promotion.namespace
    expires = (deps.clock() + timedelta(seconds=target.approval_timeout)).isoformat(timespec="seconds")
    step = record(
        deps, ns, promotion.log, Stage.AWAITING_APPROVAL, stack_id=str(stack.get("StackId", "")), expires_at=expires
    )
    if step is None:
        return ignore(f"promotion {promotion.id} was moved on by another invocation", ns.name, promotion.id)
    outputs = Stacks.outputs(stack)
    deps.bus.put(
        [
            event_for(
                promotion,
                ev.APPROVAL_REQUESTED,
                stack=ns.stack_name(promotion.version),
                endpoint=outputs.get("EndpointAddress"),
                expires_at=expires,
                previous=promotion.request.previous,
            )
        ]
    )
    return Result("await_approval", f"database ready; approval needed by {expires}", promotion.id, ns.name)


def deploy(
    deps: Deps, rec: Recorded, promotion: Promotion, stack: dict[str, Any], *, approved_by: str | None = None
) -> Result:
    """The DB stack is up: record its facts, make it active, roll the service onto it (claimed, once)."""
    ns, version = promotion.namespace, promotion.version
    try:
        config = rec.config()
        target = config.target(ns.environment)
        db = _db_record(config, target, ns, promotion, stack)
        service = deps.services.describe_service(target.cluster, target.service)
        current = None
        if service is not None:
            current, _ = deps.services.describe_task_definition(service["taskDefinition"])
    except (KeyError, ValueError, UnknownTenant, InvalidConfig) as exc:
        return _fail_claimed(deps, rec, promotion, stack, f"cannot deploy: {exc}")
    except ClientError as exc:
        if error_code(exc) in DETERMINISTIC_ERRORS:
            return _fail_claimed(deps, rec, promotion, stack, f"cannot deploy: {error_code(exc)}: {exc}"[:500])
        raise
    # The task definition the service ran before this promotion: recorded by the first claim, so a
    # takeover after a crash (when the service may already run ours) still knows where to go back to.
    previous_td = promotion.previous_task_definition or (service["taskDefinition"] if service else None)
    step = claim(
        deps,
        ns,
        promotion.log,
        Stage.DEPLOYING,
        stack_id=str(stack.get("StackId", "")),
        by=approved_by,
        previous_task_definition=previous_td,
    )
    if step is None:
        return ignore(f"promotion {promotion.id} is being deployed by another invocation", ns.name, promotion.id)
    promotion = Promotion(promotion.request, extend(promotion.log, step))
    try:
        spec = task_definition_spec(
            current,
            ns=ns,
            version=version,
            target=target,
            db=db,
            db_parameter=deps.store.db_path(ns, version),
            image=promotion.image,
            accepted_keys=deps.services.register_keys(),
        )
    except PromotionError as exc:
        return end(deps, rec, promotion, Outcome.FAILED, f"cannot deploy: {exc}")
    deps.store.put_db(ns, version, db)
    deps.store.set_active(ns, version, was=rec.active)
    switched = replace(rec, active=version)
    try:
        deps.store.index_service(target.cluster, target.service, ns)
        tags = ns.tags(version, **{PROMOTION_TAG: promotion.id, KIND_TAG: "task-definition"})
        task_definition = deps.services.register_task_definition(spec, tags)
        if service is None:
            tags = ns.tags(version, **{PROMOTION_TAG: promotion.id, KIND_TAG: "service"})
            service = deps.services.create_service(create_service_spec(target, ns, task_definition, tags))
            verb = "created"
        else:
            service = deps.services.update_service(target.cluster, target.service, task_definition)
            verb = "updated"
    except ClientError as exc:
        if error_code(exc) in DETERMINISTIC_ERRORS:
            return end(deps, switched, promotion, Outcome.FAILED, f"cannot deploy: {error_code(exc)}: {exc}"[:500])
        raise
    primary = primary_deployment(service)
    if primary is None:
        reason = f"service {target.service} has no primary deployment after update"
        return end(deps, switched, promotion, Outcome.FAILED, reason)
    deps.store.complete(
        ns,
        promotion.id,
        step._replace(task_definition=task_definition, deployment_id=primary["id"]),
    )
    deps.bus.put(
        [
            event_for(promotion, ev.DATABASE_READY, endpoint=db.endpoint, port=db.port, stack=db.stack),
            event_for(
                promotion,
                ev.SERVICE_DEPLOYING,
                task_definition=task_definition,
                deployment_id=primary["id"],
                service=target.service,
                cluster=target.cluster,
                service_action=verb,
                approved_by=approved_by,
            ),
        ]
    )
    return Result("deploy", f"service {verb}, deployment {primary['id']}", promotion.id, ns.name)


def _fail_claimed(deps: Deps, rec: Recorded, promotion: Promotion, stack: dict[str, Any], reason: str) -> Result:
    """A deterministic problem found before deploying: claim the deploy (so only one acts), then fail."""
    step = claim(deps, promotion.namespace, promotion.log, Stage.DEPLOYING, stack_id=str(stack.get("StackId", "")))
    if step is None:
        return ignore(f"promotion {promotion.id} is being deployed by another invocation")
    return end(deps, rec, Promotion(promotion.request, extend(promotion.log, step)), Outcome.FAILED, reason)


def _db_record(
    config: TenantConfig, target: Target, ns: Namespace, promotion: Promotion, stack: dict[str, Any]
) -> DbRecord:
    version = promotion.version
    outputs = Stacks.outputs(stack)
    return DbRecord(
        stack=ns.stack_name(version),
        instance=outputs.get("InstanceId") or ns.instance_id(version),
        endpoint=outputs["EndpointAddress"],
        port=int(outputs["EndpointPort"]),
        snapshot=config.source.snapshot_id(version),
        version=version.value,
        secret_arn=outputs.get("MasterUserSecretArn") or target.db.secret_arn,
        database=target.db.database,
    )
