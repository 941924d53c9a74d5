"""Source snapshots: ``Snapshot Requested`` (by hand or on the tenant's schedule) and their completion.

A snapshot's name comes from the request's ``time`` (the version), the same on every re-delivery, so a
duplicate finds the snapshot already there. A scheduled snapshot's request is put by the schedule
handler with a create-only marker per tenant and due time: overlapping or repeated runs put it once.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.aws import Stacks, error_code
from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.cells import CellRefused
from chalicelib.domain.config import InvalidConfig
from chalicelib.domain.model import Stage, UnknownTenant
from chalicelib.domain.names import KIND_TAG, PROMOTION_TAG, InvalidName, Version, Versioned
from chalicelib.usecases.cells import foreign, of_config, of_promotion
from chalicelib.usecases.cutover import start
from chalicelib.usecases.transitions import Result, ignore

logger = logging.getLogger(__name__)

REQUESTED_BY_TAG = "tierlift:requested-by"


# Why RDS refused CreateDBSnapshot, and what to do next, by error code.
NOT_TAKEN = {
    "DBInstanceNotFound": "the source DB instance {instance} does not exist: create it, or fix source.db_instance "
    "in the config and register it again (tierlift tenant register FILE)",
    "InvalidDBInstanceState": "the source DB instance {instance} is not available (stopped, or busy with another "
    "snapshot or change): wait until it is available, then tierlift snapshot {tenant}",
    "SnapshotQuotaExceeded": "the account's manual DB snapshot quota is reached: delete old snapshots or raise "
    "the quota (Service Quotas, RDS ManualSnapshots), then tierlift snapshot {tenant}",
}


def snapshot_failed(
    request_id: str,
    reason: str,
    *,
    tenant: str | None,
    requested_by: str | None = None,
    snapshot: str | None = None,
    db_instance: str | None = None,
    error: str | None = None,
) -> ev.OutboundEvent:
    """``Snapshot Failed``: the answer to a ``Snapshot Requested`` that cannot be carried out; a field the
    request did not carry (an unreadable tenant) is left out, never invented."""
    detail = {
        "tenant": tenant,
        "request_id": request_id,
        "snapshot": snapshot,
        "db_instance": db_instance,
        "requested_by": requested_by,
        "error": error,
        "reason": reason,
    }
    return ev.OutboundEvent(ev.SNAPSHOT_FAILED, {k: v for k, v in detail.items() if v is not None})


def _failed(deps: Deps, request_id: str, reason: str, **fields: Any) -> Result:
    logger.warning("snapshot not taken: %s", reason, extra={"reason": reason})
    deps.bus.put([snapshot_failed(request_id, reason, **fields)])
    return Result("reject", reason, namespace=fields.get("db_instance"))


def snapshot_request_invalid(deps: Deps, raw: Any, reason: str) -> Result:
    """A ``Snapshot Requested`` that does not parse (no tenant, a bad name): ``Snapshot Failed`` with why."""
    detail = raw.get("detail") if isinstance(raw, dict) else None
    tenant = detail.get("tenant") if isinstance(detail, dict) else None
    shown = ev.safe(tenant) if isinstance(tenant, str) else None
    return _failed(
        deps,
        ev.safe(raw.get("id") if isinstance(raw, dict) else None, 128),
        f"{reason}: send Snapshot Requested with the tenant's name (tierlift snapshot TENANT)",
        tenant=shown,
    )


def request_snapshot(deps: Deps, request: ev.SnapshotRequest) -> Result:
    """Take a manual snapshot of the tenant's source DB, named for the request's time (the version).

    A request that cannot be carried out (no config, no such DB, a DB not available, the snapshot quota)
    is answered with ``Snapshot Failed`` and its reason; nothing else is done.
    """
    tenant = request.tenant.name
    try:
        config = deps.store.get_config(request.tenant)
    except UnknownTenant:
        reason = f"tenant {tenant} has no config: register it first (tierlift tenant register FILE)"
        return _failed(deps, request.id, reason, tenant=tenant, requested_by=request.requested_by)
    except InvalidConfig as exc:
        reason = f"tenant {tenant}'s config does not validate ({exc}): fix it and register it again"
        return _failed(deps, request.id, reason, tenant=tenant, requested_by=request.requested_by)
    try:
        deps = of_config(deps, config)  # the source DB is in the tenant's cell
    except CellRefused as exc:
        return _failed(deps, request.id, str(exc), tenant=tenant, requested_by=request.requested_by)
    version = Version.from_datetime(request.time)
    source = config.source
    snapshot_id = source.snapshot_id(version)
    tags = source.tags(version, **{KIND_TAG: "source-snapshot", REQUESTED_BY_TAG: ev.tag_value(request.requested_by)})
    try:
        created = deps.rds.create_snapshot(snapshot_id, config.source_db_instance, tags)
    except ClientError as exc:
        code = error_code(exc)
        if code not in NOT_TAKEN:
            raise
        return _failed(
            deps,
            request.id,
            NOT_TAKEN[code].format(instance=config.source_db_instance, tenant=tenant),
            tenant=tenant,
            requested_by=request.requested_by,
            snapshot=snapshot_id,
            db_instance=config.source_db_instance,
            error=code,
        )
    return Result(
        "snapshot" if created else "ignore", "" if created else "duplicate: snapshot exists", None, snapshot_id
    )


def on_snapshot_created(deps: Deps, rds_event: ev.RdsSnapshotEvent) -> Result:
    """RDS finished a manual snapshot: ``Promotion Requested`` for the tenant's automatic environments."""
    if rds_event.event_id != ev.MANUAL_SNAPSHOT_CREATED or rds_event.source_type != "SNAPSHOT":
        return ignore(f"{rds_event.event_id} of {rds_event.source_type} is not a manual snapshot completing")
    # Every manual snapshot in the account completes with this event: one whose name is no source snapshot
    # (a DB stack's final snapshot, someone's own backup) or of a tenant tierlift has no config for is not
    # tierlift's, an expected ignore. A tenant whose config does not validate needs a look.
    try:
        snapshot = Versioned.parse_snapshot(rds_event.snapshot_id)
        config = deps.store.get_config(snapshot.namespace.tenant)
    except (InvalidName, UnknownTenant) as exc:
        return ignore(f"not a tierlift source snapshot: {ev.safe(rds_event.snapshot_id)}: {exc}", expected=True)
    except InvalidConfig as exc:
        return ignore(f"snapshot {ev.safe(rds_event.snapshot_id)}: {exc}")
    refused = foreign(deps, rds_event.account, config.cell)
    if refused is not None:
        return ignore(f"snapshot {snapshot.snapshot_id}: {refused}", snapshot.namespace.name)
    if snapshot.namespace.environment != config.source_environment:
        return ignore(
            f"snapshot {snapshot.snapshot_id} is not of the source environment {config.source_environment}",
            expected=True,
        )
    # Whether the snapshot is the source DB's and available is checked by each request it causes.
    requests = [
        ev.promotion_requested(
            tenant=config.tenant.name,
            environment=env,
            version=snapshot.version.value,
            requested_by=f"tierlift:snapshot/{snapshot.snapshot_id}",
            promotion_id=ev.automatic_request_id(snapshot.snapshot_id, env),
        )
        for env in config.automatic
    ]
    if requests:
        deps.bus.put(requests)
    return Result(
        "request", f"{len(requests)} automatic promotion(s) of {snapshot.version}", namespace=snapshot.snapshot_id
    )


def on_snapshot_copied(deps: Deps, rds_event: ev.RdsSnapshotEvent) -> Result:
    """RDS finished a local snapshot copy (RDS-EVENT-0197): the encrypted copy of an unencrypted source
    snapshot is ready, so the promotion waiting for it (holding its lock) creates its DB stack from it."""
    if rds_event.event_id != ev.SNAPSHOT_COPY_FINISHED or rds_event.source_type != "SNAPSHOT":
        return ignore(f"{rds_event.event_id} of {rds_event.source_type} is not a snapshot copy finishing")
    try:
        copy = Versioned.parse_encrypted_copy(rds_event.snapshot_id)
    except InvalidName as exc:
        return ignore(f"not a tierlift encrypted copy: {exc}", expected=True)
    return resume_after_copy(deps, copy, account=rds_event.account, from_event=True)


def resume_after_copy(deps: Deps, copy: Versioned, *, account: str | None = None, from_event: bool = False) -> Result:
    """Start the promotion of ``copy``'s namespace and version that waits for it (the copy event's use
    case, and the sweep's for a lost one). A duplicate finds its stack created and changes nothing.
    An event from another account than the promotion's cell is ignored with the reason."""
    ns, copy_id = copy.namespace, copy.encrypted_copy_id
    promotion = deps.store.read(ns).promotion
    if promotion is None or promotion.request.version != copy.version.value or not promotion.request.encrypt_with:
        return ignore(f"no promotion of {ns} waits for {copy_id}", ns.name, expected=True)
    if promotion.stage is not Stage.RESTORING:
        return ignore(f"promotion {promotion.id} is {promotion.stage}", ns.name, promotion.id, expected=True)
    refused = foreign(deps, account, promotion.request.cell_settings) if from_event else None
    if refused is not None:
        return ignore(refused, ns.name, promotion.id)
    stack = of_promotion(deps, promotion).stacks.describe(ns.stack_name(copy.version))
    if stack is not None and Stacks.tags(stack).get(PROMOTION_TAG) == promotion.id:
        return ignore(f"duplicate: stack {stack['StackName']} is created", ns.name, promotion.id, expected=True)
    return start(deps, promotion)


# --------------------------------------------------------------------------------------------------
# Scheduled snapshots
# --------------------------------------------------------------------------------------------------
