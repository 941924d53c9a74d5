"""Keep each tenant's snapshot schedule what its config says (EventBridge Scheduler, no tick, no markers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.domain.config import TenantConfig
from chalicelib.domain.names import Tenant
from chalicelib.domain.schedules import schedule_name, snapshot_schedule, tenant_of


def sync(schedules: Any, tenant: Tenant, config: TenantConfig | None) -> str:
    """The tenant's schedule as ``config`` wants it (None: the tenant is gone): what was done."""
    spec = snapshot_schedule(config) if config is not None else None
    if spec is None:
        deleted = schedules.delete(schedule_name(tenant))
        return "snapshot schedule deleted" if deleted else "no snapshot schedule"
    verb = schedules.put(spec)
    return f"snapshot schedule {verb}: {spec.expression} UTC"


def reconcile(schedules: Any, configs: Mapping[str, TenantConfig]) -> dict[str, int]:
    """Repair drift from one listing: a configured schedule that is missing is created, a schedule of a
    tenant without one (or without a config) is deleted. A changed time is applied by ``sync``
    (``tenant register``), which the sweep does not second-guess."""
    present = schedules.names()
    created = deleted = 0
    for _tenant, config in sorted(configs.items()):
        spec = snapshot_schedule(config)
        if spec is not None and spec.name not in present:
            schedules.put(spec)
            created += 1
    for name in sorted(present):
        tenant = tenant_of(name)
        if tenant is None:
            continue
        wanted = configs.get(tenant.name)
        if wanted is None or snapshot_schedule(wanted) is None:
            deleted += int(schedules.delete(name))
    return {"schedules_created": created, "schedules_deleted": deleted}
