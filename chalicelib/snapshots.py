"""Source snapshots: ``Snapshot Requested`` (by hand or on the tenant's schedule) and their completion.

A snapshot's name comes from the request's ``time`` (the version), the same on every re-delivery, so a
duplicate finds the snapshot already there. A scheduled snapshot's request is put by the schedule
handler with a create-only marker per tenant and due time: overlapping or repeated runs put it once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import events as ev
from chalicelib.aws import error_code
from chalicelib.config import InvalidConfig, TenantConfig
from chalicelib.deps import Deps
from chalicelib.names import KIND_TAG, InvalidName, Tenant, Version, Versioned
from chalicelib.requests import BadRequest, check_source_snapshot
from chalicelib.state import UnknownTenant, parse_tree
from chalicelib.transitions import Result, ignore

logger = logging.getLogger(__name__)

REQUESTED_BY_TAG = "tierlift:requested-by"


def request_snapshot(deps: Deps, event: Any) -> Result:
    """Take a manual snapshot of the tenant's source DB, named for the request's time (the version)."""
    try:
        request = ev.SnapshotRequest.parse(event)
        config = deps.store.get_config(request.tenant)
    except (ev.InvalidEvent, UnknownTenant, InvalidConfig) as exc:
        logger.warning("snapshot request ignored: %s", exc)
        return Result("ignore", str(exc))
    version = Version.from_datetime(request.time)
    source = config.source
    snapshot_id = source.snapshot_id(version)
    tags = source.tags(version, **{KIND_TAG: "source-snapshot", REQUESTED_BY_TAG: ev.tag_value(request.requested_by)})
    try:
        created = deps.rds.create_snapshot(snapshot_id, config.source_db_instance, tags)
    except ClientError as exc:
        if error_code(exc) in ("DBInstanceNotFound", "InvalidDBInstanceState", "SnapshotQuotaExceeded"):
            logger.error("snapshot %s not taken: %s", snapshot_id, exc)
            return Result("ignore", f"snapshot not taken: {error_code(exc)}", namespace=source.name)
        raise
    return Result(
        "snapshot" if created else "ignore", "" if created else "duplicate: snapshot exists", None, snapshot_id
    )


def on_snapshot_created(deps: Deps, event: Any) -> Result:
    """RDS finished a manual snapshot: ``Promotion Requested`` for the tenant's automatic environments."""
    try:
        rds_event = ev.RdsSnapshotEvent.parse(event)
    except ev.InvalidEvent as exc:
        return ignore(str(exc))
    if rds_event.event_id != ev.MANUAL_SNAPSHOT_CREATED or rds_event.source_type != "SNAPSHOT":
        return ignore(f"{rds_event.event_id} of {rds_event.source_type} is not a manual snapshot completing")
    try:
        snapshot = Versioned.parse_snapshot(rds_event.snapshot_id)
        config = deps.store.get_config(snapshot.namespace.tenant)
    except (InvalidName, UnknownTenant, InvalidConfig) as exc:
        return ignore(f"snapshot {ev.safe(rds_event.snapshot_id)}: {exc}")
    if snapshot.namespace.environment != config.source_environment:
        return ignore(f"snapshot {snapshot.snapshot_id} is not of the source environment {config.source_environment}")
    try:
        reason = check_source_snapshot(deps, config, snapshot.version)
    except BadRequest as exc:
        reason = str(exc)
    if reason:
        return ignore(reason)
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


# --------------------------------------------------------------------------------------------------
# Scheduled snapshots
# --------------------------------------------------------------------------------------------------
def due_time(config: TenantConfig, now: datetime) -> datetime | None:
    """The tenant's latest scheduled snapshot time at or before ``now`` (None without a schedule)."""
    schedule = config.snapshot_schedule
    if schedule is None:
        return None
    due = now.replace(hour=schedule.hour, minute=schedule.minute, second=0, microsecond=0)
    return due if due <= now else due - timedelta(days=1)


def on_snapshot_schedule(deps: Deps, event: Any) -> Result:
    """Every few minutes: ``Snapshot Requested`` for each tenant whose daily snapshot is due, once per due time.

    The marker ``/<root>/<tenant>/snapshots/<due>`` is created without overwrite before the request is
    put, so of two overlapping runs only one puts it; a due time older than a day is skipped.
    """
    now = deps.clock()
    tree = deps.store.get_by_path_dated(deps.store.root)
    configs: dict[str, TenantConfig] = {}
    for rec in parse_tree(deps.store.root, tree):
        tenant = rec.namespace.tenant
        if tenant.name in configs or rec.config_text is None:
            continue
        try:
            configs[tenant.name] = rec.config()
        except InvalidConfig:
            continue
    requested = 0
    for name, config in sorted(configs.items()):
        due = due_time(config, now)
        if due is None or now - due > timedelta(hours=1):
            continue
        if deps.store.mark_scheduled_snapshot(Tenant.parse(name), Version.from_datetime(due)):
            deps.bus.put([ev.snapshot_requested(tenant=name, requested_by=f"tierlift:schedule/{due:%H:%M}")])
            requested += 1
    return Result("schedule", f"{requested} scheduled snapshot(s) requested")
