"""From a held lock to a rolled service: restore the DB stack, wait for approval, cut over.

* :func:`start` creates the DB stack (idempotent: same name, same ``ClientRequestToken``) and puts
  ``Promotion Started``; it parks the promotion (holding its lock) while the account has no DB-instance
  headroom or while an earlier stack of the same version is still being deleted.
* :func:`on_stack_ready` either asks for approval (a deploy entry ``awaiting``, ``Approval Requested``)
  or deploys.
* :func:`deploy` claims the cutover before its first effect: ``db/<version>``, a task definition and
  the service update happen once per promotion, whatever the number of deliveries; the claim, completed
  with the deployment id, is what the ECS events are matched by. A deterministic AWS error ends the
  promotion as failed; throttling and server errors propagate so Lambda retries, and the retry (same
  request id) carries on with its own claim.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.aws import Stacks, error_code
from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.config import InvalidConfig, Target
from chalicelib.domain.decisions import stack_token
from chalicelib.domain.ecs_spec import PromotionError, create_service_spec, primary_deployment, task_definition_spec
from chalicelib.domain.model import WAITING_FOR_DELETE, WAITING_FOR_HEADROOM, DbRecord, EnvRecord, Outcome, Promotion
from chalicelib.domain.names import KIND_TAG, PROMOTION_TAG, InvalidName, Namespace
from chalicelib.usecases import headroom
from chalicelib.usecases.cells import of_promotion
from chalicelib.usecases.encryption import encrypted_source
from chalicelib.usecases.endings import delete_stack, end
from chalicelib.usecases.transitions import Result, append, claim_deploy, event_for, ignore, with_entry

logger = logging.getLogger(__name__)

# AWS errors that the same call would meet again: the promotion fails instead of retrying forever.
DETERMINISTIC_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "ClientException",
        "ClusterNotFoundException",
        "ImageNotFoundException",
        "InvalidParameterException",
        "InvalidParameterValue",
        "PlatformTaskDefinitionIncompatibilityException",
        "PlatformUnknownException",
        "RepositoryNotFoundException",
        "ServiceNotActiveException",
        "ServiceNotFoundException",
        "UnauthorizedOperation",
        "UnsupportedFeatureException",
        "ValidationError",
        "ValidationException",
    }
)


def stack_parameters(promotion: Promotion, target: Target) -> dict[str, str]:
    version = promotion.version
    ns = promotion.namespace
    parameters = {
        "Tenant": ns.tenant.name,
        "Environment": ns.environment,
        "Customer": ns.tenant.customer,
        "Project": ns.tenant.project,
        "Version": version.value,
        "SnapshotIdentifier": promotion.request.snapshot or "",
        "InstanceIdentifier": ns.instance_id(version),
        "InstanceClass": target.db.instance_class,
        "SubnetGroup": target.db.subnet_group,
        "SecurityGroups": ",".join(target.db.security_groups),
        # encryption key, Multi-AZ, backups, Performance Insights: prod-grade under approval
        **target.db.stack_parameters(
            approval_required=target.approval_required, engine_version=promotion.request.engine_version or ""
        ),
    }
    if promotion.request.encrypt_with:
        # the source snapshot is not encrypted: restore from its encrypted copy (encryption.py)
        parameters["SnapshotIdentifier"] = ns.encrypted_copy_id(version)
    return parameters


def start(deps: Deps, promotion: Promotion, *, admitted: bool = False, attempt: int = 0) -> Result:
    """The lock is this promotion's: create its DB stack (when RDS has room) and put ``Promotion Started``.

    ``attempt``: how many restores RDS refused for the quota before (each retry needs a new token).
    """
    ns, version = promotion.namespace, promotion.version
    try:
        target = promotion.request.target_settings()
    except InvalidConfig as exc:
        return end(deps, deps.store.read(ns), promotion, Outcome.FAILED, f"cannot start: {exc}")
    deps = of_promotion(deps, promotion)  # its stack is created in the tenant's cell
    if promotion.request.redeploy is not None:
        return redeploy(deps, promotion, target)
    copying = encrypted_source(deps, promotion)
    if copying is not None:
        return copying  # an unencrypted source: its encrypted copy first (RDS-EVENT-0197 resumes here)
    if not admitted and not headroom.may_start(deps, promotion):
        return park(deps, promotion, WAITING_FOR_HEADROOM, attempt=attempt)
    name = ns.stack_name(version)
    tags = ns.tags(version, **{PROMOTION_TAG: promotion.id, KIND_TAG: "db-stack"})
    token = stack_token(promotion.id, attempt)
    parameters = stack_parameters(promotion, target)
    stack_id = deps.stacks.create(name, deps.template, parameters, tags, token)
    existing = deps.stacks.describe(name) if stack_id is None else None
    if stack_id is None and existing is None:
        # Gone between the two calls (an earlier stack of the name finished deleting, and its
        # DELETE_COMPLETE found nothing waiting): the name is free now, create again (same token).
        stack_id = deps.stacks.create(name, deps.template, parameters, tags, token)
        existing = deps.stacks.describe(name) if stack_id is None else None
        if stack_id is None and existing is None:
            return ignore(f"stack {name} vanished while being created twice; the sweep retries", ns.name)
    if existing is not None:
        owner = Stacks.tags(existing).get(PROMOTION_TAG)
        if owner != promotion.id:
            if existing.get("StackStatus") == "DELETE_IN_PROGRESS" and ns.owns(Stacks.tags(existing)):
                # An earlier promotion's stack of this version is still being deleted: restore again once
                # it is gone (its DELETE_COMPLETE resumes this promotion; so does the sweep).
                return _park_for_delete(deps, promotion, name, attempt)
            # Never adopt (or delete) a stack this promotion did not create.
            reason = f"stack {name} already exists (promotion {owner}); not touching it"
            return end(deps, deps.store.read(ns), promotion, Outcome.FAILED, reason)
        stack_id = str(existing.get("StackId", ""))
    deps.bus.put(
        [
            event_for(
                promotion,
                ev.PROMOTION_STARTED,
                previous=promotion.request.previous,
                stack=name,
                override=promotion.request.override,
                image=promotion.request.image,
            )
        ]
    )
    return Result("start", f"creating {name}", promotion.id, ns.name)


def redeploy(deps: Deps, promotion: Promotion, target: Target) -> Result:
    """Roll the service onto the task definition it runs (``forceNewDeployment``): new tasks read the
    rotated secret. Claimed like a cutover, matched by its deployment id like one; the DB stays."""
    ns = promotion.namespace
    deps = of_promotion(deps, promotion)
    service = deps.services.describe_service(target.cluster, target.service)
    if service is None:
        reason = f"service {target.service} does not exist: nothing to redeploy"
        return end(deps, deps.store.read(ns), promotion, Outcome.FAILED, reason)
    task_definition = str(service["taskDefinition"])
    claimed = claim_deploy(deps, promotion, previous_task_definition=task_definition)
    if claimed is None:
        return ignore(f"promotion {promotion.id} is being deployed by another invocation", ns.name, promotion.id)
    promotion = with_entry(promotion, claimed)
    if claimed.deployment_id is None:
        service = deps.services.update_service(target.cluster, target.service, task_definition, force=True)
    primary = primary_deployment(service)
    if primary is None:
        return end(deps, deps.store.read(ns), promotion, Outcome.FAILED, f"service {target.service} has no deployment")
    deps.store.complete_deploy(
        promotion, claimed._replace(task_definition=task_definition, deployment_id=primary["id"])
    )
    deps.bus.put(
        [
            event_for(
                promotion,
                ev.PROMOTION_STARTED,
                previous=promotion.request.previous,
                redeploy=promotion.request.redeploy,
            ),
            event_for(
                promotion,
                ev.SERVICE_DEPLOYING,
                task_definition=task_definition,
                deployment_id=primary["id"],
                service=target.service,
                cluster=target.cluster,
                service_action="redeployed",
            ),
        ]
    )
    return Result("redeploy", f"{promotion.request.redeploy}: deployment {primary['id']}", promotion.id, ns.name)


def _park_for_delete(deps: Deps, promotion: Promotion, name: str, attempt: int) -> Result:
    """Wait for ``name``'s delete; then look again: a DELETE_COMPLETE handled before the waiting entry
    was written found nothing to admit, so if the stack is gone already, admit now (as it would have)."""
    parked = park(deps, promotion, WAITING_FOR_DELETE, stack=name, attempt=attempt)
    if deps.stacks.describe(name) is not None:
        return parked
    admitted = headroom.admit(
        deps, lambda bound, waiting, tries: start(bound, waiting, admitted=True, attempt=tries), name
    )
    return (
        Result(
            "start",
            f"creating {name} (its earlier stack was deleted meanwhile)",
            promotion.id,
            promotion.namespace.name,
        )
        if admitted
        else parked
    )


def park(
    deps: Deps,
    promotion: Promotion,
    why: str,
    *,
    stack: str | None = None,
    attempt: int = 0,
    failed_stack: bool = False,
) -> Result:
    """Wait holding the lock, in request order: for DB-instance headroom, or for ``stack``'s delete."""
    ns = promotion.namespace
    if headroom.park(deps, promotion, stack=stack, attempt=attempt):
        deps.bus.put([event_for(promotion, ev.PROMOTION_QUEUED, reason=why)])
    if failed_stack:
        # RDS refused the restore for the quota: the stack goes; its DELETE_COMPLETE retries the start.
        headroom.forget_cached()
        delete_stack(deps, ns, promotion.version, WAITING_FOR_HEADROOM, active=None, owner=promotion.id)
    return Result(
        "wait",
        why if stack is None else f"stack {stack} is still being deleted; restoring after it",
        promotion.id,
        ns.name,
    )


def on_stack_ready(deps: Deps, rec: EnvRecord, promotion: Promotion, stack: dict[str, Any]) -> Result:
    """The DB stack is ``CREATE_COMPLETE``: ask for approval where the target wants it, else deploy."""
    ns = promotion.namespace
    try:
        target = promotion.request.target_settings()
    except InvalidConfig as exc:
        return end(deps, rec, promotion, Outcome.FAILED, f"cannot deploy: {exc}")
    # An override (skipping the earlier environment, another image) is approved like a cutover.
    if (target.approval_required or promotion.request.override is not None) and not promotion.deploys:
        return _await_approval(deps, promotion, target, stack)
    if promotion.latest is not None and promotion.latest.awaiting:
        return ignore(f"promotion {promotion.id} waits for approval", ns.name, promotion.id, expected=True)
    return deploy(deps, rec, promotion, stack)


def _await_approval(deps: Deps, promotion: Promotion, target: Target, stack: dict[str, Any]) -> Result:
    ns = promotion.namespace
    expires = (deps.clock() + timedelta(seconds=target.approval_timeout)).isoformat(timespec="seconds")
    entry = append(deps, promotion, awaiting=True, stack_id=str(stack.get("StackId", "")), expires_at=expires)
    if entry is None:
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
    deps: Deps, rec: EnvRecord, promotion: Promotion, stack: dict[str, Any], *, approved_by: str | None = None
) -> Result:
    """The DB stack is up: record its facts, roll the service onto it (claimed, once)."""
    ns, version = promotion.namespace, promotion.version
    deps = of_promotion(deps, promotion)  # the service is in the tenant's cell
    try:
        target = promotion.request.target_settings()
        db = _db_record(target, promotion, stack)
        service = deps.services.describe_service(target.cluster, target.service)
        current: dict[str, Any] | None = None
        current_tags: dict[str, str] = {}
        if service is not None:
            current, current_tags = deps.services.describe_task_definition(service["taskDefinition"])
        image = _image_to_run(deps, promotion, current, target)
    except (KeyError, ValueError, LookupError, InvalidConfig) as exc:
        return _fail_claimed(deps, rec, promotion, stack, f"cannot deploy: {exc}")
    except ClientError as exc:
        if error_code(exc) in DETERMINISTIC_ERRORS:
            return _fail_claimed(deps, rec, promotion, stack, f"cannot deploy: {error_code(exc)}: {exc}"[:500])
        raise
    # The task definition the service ran before this promotion: recorded by the first claim, so a
    # takeover after a crash (when the service may already run ours) still knows where to go back to.
    already = current_tags.get(PROMOTION_TAG) == promotion.id
    previous_td = promotion.previous_task_definition or (
        service["taskDefinition"] if service is not None and not already else None
    )
    claimed = claim_deploy(
        deps,
        promotion,
        stack_id=str(stack.get("StackId", "")),
        by=approved_by,
        previous_task_definition=previous_td,
        image=image,
    )
    if claimed is None:
        return ignore(f"promotion {promotion.id} is being deployed by another invocation", ns.name, promotion.id)
    promotion = with_entry(promotion, claimed)
    approved_by = approved_by or claimed.by
    try:
        spec = task_definition_spec(
            current,
            ns=ns,
            version=version,
            target=target,
            db=db,
            db_parameter=deps.store.db_path(ns, version),
            image=claimed.image or image,
            accepted_keys=deps.services.register_keys(),
        )
    except PromotionError as exc:
        return end(deps, rec, promotion, Outcome.FAILED, f"cannot deploy: {exc}")
    deps.store.put_db(ns, version, db)
    try:
        if already and service is not None:
            # A retry after a crash: the service already runs this promotion's task definition.
            task_definition, verb = str(service["taskDefinition"]), "updated"
        else:
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
            return end(deps, rec, promotion, Outcome.FAILED, f"cannot deploy: {error_code(exc)}: {exc}"[:500])
        raise
    _index(deps, ns, target)
    primary = primary_deployment(service)
    if primary is None:
        reason = f"service {target.service} has no primary deployment after update"
        return end(deps, rec, promotion, Outcome.FAILED, reason)
    deps.store.complete_deploy(
        promotion, claimed._replace(task_definition=task_definition, deployment_id=primary["id"])
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


def _image_to_run(deps: Deps, promotion: Promotion, current: dict[str, Any] | None, target: Target) -> str | None:
    """The image of the cutover, by digest where the registry has one: the request's (for an environment
    that requires the earlier one, the digest that completed there), else the one the service runs, else
    the config's. Outside the target's ``allowed_images`` it is refused (the request was checked; the
    running image was not)."""
    image = promotion.image
    if image is None and current is not None:
        containers = current.get("containerDefinitions") or []
        image = next((c.get("image") for c in containers if c.get("name") == target.container), None)
    image = image or target.task.image
    if not image:
        return None
    pinned = deps.images.pin(image)
    allowed = target.policy.allowed_images
    if allowed and not pinned.startswith(allowed):
        raise ValueError(f"image {pinned} is not from an allowed repository of {target.environment}")
    return pinned


def _index(deps: Deps, ns: Namespace, target: Target) -> None:
    """ECS events name the service; one named as the contract names it (``<namespace>``) maps to its
    namespace by name. Any other name needs the index ``/<root>/services/<cluster>/<service>`` (written
    by ``tenant register``; here when it is missing: one read per promotion, one write once)."""
    with contextlib.suppress(InvalidName):
        if Namespace.parse(target.service) == ns:
            return
    if deps.store.namespace_of_service(target.cluster, target.service) != ns:
        deps.store.index_service(target.cluster, target.service, ns)


def _fail_claimed(deps: Deps, rec: EnvRecord, promotion: Promotion, stack: dict[str, Any], reason: str) -> Result:
    """A deterministic problem found before deploying: claim the deploy (so only one acts), then fail."""
    claimed = claim_deploy(deps, promotion, stack_id=str(stack.get("StackId", "")))
    if claimed is None:
        return ignore(f"promotion {promotion.id} is being deployed by another invocation")
    return end(deps, rec, with_entry(promotion, claimed), Outcome.FAILED, reason)


def _db_record(target: Target, promotion: Promotion, stack: dict[str, Any]) -> DbRecord:
    version, ns = promotion.version, promotion.namespace
    outputs = Stacks.outputs(stack)
    return DbRecord(
        stack=ns.stack_name(version),
        instance=outputs.get("InstanceId") or ns.instance_id(version),
        endpoint=outputs["EndpointAddress"],
        port=int(outputs["EndpointPort"]),
        snapshot=promotion.request.snapshot or "",
        version=version.value,
        secret_arn=outputs.get("MasterUserSecretArn") or target.db.secret_arn,
        database=target.db.database,
    )
