"""A tenant's daily source snapshot as one EventBridge Scheduler schedule.

The schedule ``snapshot-<tenant>`` in the stage's schedule group (``tierlift-<stage>``) puts
``Snapshot Requested`` on tierlift's bus at the config's ``snapshot_schedule.daily_at`` (UTC). Nothing
runs on a tick and nothing is written per day: the schedule is the state, created, changed and deleted
with the config (``tierlift tenant register``/``deregister``; the sweep repairs drift).
"""

from __future__ import annotations

import json

from chalicelib.domain.config import TenantConfig
from chalicelib.domain.names import Tenant
from chalicelib.domain.records import NamedTuple

PREFIX = "snapshot-"
REQUESTED_BY = "tierlift:schedule"


class ScheduleSpec(NamedTuple):
    name: str
    expression: str  # cron(M H * * ? *), UTC
    detail: str  # the Snapshot Requested detail, JSON


def schedule_name(tenant: Tenant) -> str:
    return f"{PREFIX}{tenant.name}"


def tenant_of(name: str) -> Tenant | None:
    """The tenant a schedule of the group is for (None for a schedule tierlift did not name)."""
    from chalicelib.domain.names import InvalidName

    if not name.startswith(PREFIX):
        return None
    try:
        return Tenant.parse(name[len(PREFIX) :])
    except InvalidName:
        return None


def snapshot_schedule(config: TenantConfig) -> ScheduleSpec | None:
    schedule = config.snapshot_schedule
    if schedule is None:
        return None
    detail = {"tenant": config.tenant.name, "requested_by": f"{REQUESTED_BY}/{schedule.hour:02d}:{schedule.minute:02d}"}
    return ScheduleSpec(
        schedule_name(config.tenant),
        f"cron({schedule.minute} {schedule.hour} * * ? *)",
        json.dumps(detail, sort_keys=True),
    )
