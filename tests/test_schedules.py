"""Snapshot schedules on EventBridge Scheduler: one per tenant, kept in line with the configs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.adapters.scheduler import Schedules
from chalicelib.domain.config import parse_config
from chalicelib.domain.names import Tenant
from chalicelib.domain.schedules import schedule_name, snapshot_schedule, tenant_of
from chalicelib.usecases.schedules import reconcile, sync

BUS = "arn:aws:events:us-east-1:123456789012:event-bus/tierlift-dev"
ROLE = "arn:aws:iam::123456789012:role/tierlift-dev-scheduler"


def config(tenant: str = "xy-0146", daily_at: str | None = "02:30") -> Any:
    raw: dict[str, Any] = {
        "tenant": tenant,
        "environments": ["dev", "qa"],
        "source": {"environment": "dev", "db_instance": f"{tenant}-dev"},
        "targets": {
            "qa": {
                "cluster": "c",
                "service": "s",
                "container": "app",
                "db": {"instance_class": "db.t3.micro", "subnet_group": "g", "security_groups": ["sg-01234567"]},
            }
        },
    }
    if daily_at is not None:
        raw["snapshot_schedule"] = {"daily_at": daily_at}
    return parse_config(Tenant.parse(tenant), raw)


@pytest.fixture
def schedules(aws: Any) -> Schedules:
    client = aws.client("scheduler")
    client.create_schedule_group(Name="tierlift-dev")
    return Schedules(client, "tierlift-dev", BUS, ROLE)


def test_the_spec_is_a_daily_cron_that_puts_a_snapshot_request() -> None:
    spec = snapshot_schedule(config())
    assert spec is not None and spec.name == "snapshot-xy-0146" and spec.expression == "cron(30 2 * * ? *)"
    assert json.loads(spec.detail) == {"tenant": "xy-0146", "requested_by": "tierlift:schedule/02:30"}
    assert snapshot_schedule(config(daily_at=None)) is None
    assert tenant_of("snapshot-xy-0146") == Tenant.parse("xy-0146") and tenant_of("other") is None


def test_sync_creates_updates_and_deletes_one_schedule(schedules: Schedules, aws: Any) -> None:
    client = aws.client("scheduler")
    tenant = Tenant.parse("xy-0146")
    assert sync(schedules, tenant, config()) == "snapshot schedule created: cron(30 2 * * ? *) UTC"
    found = client.get_schedule(Name=schedule_name(tenant), GroupName="tierlift-dev")
    assert found["Target"]["Arn"] == BUS and found["Target"]["RoleArn"] == ROLE
    assert found["Target"]["EventBridgeParameters"] == {"DetailType": "Snapshot Requested", "Source": "tierlift"}
    assert found["ScheduleExpressionTimezone"] == "UTC"
    assert sync(schedules, tenant, config(daily_at="04:00")) == "snapshot schedule updated: cron(0 4 * * ? *) UTC"
    assert sync(schedules, tenant, config(daily_at=None)) == "snapshot schedule deleted"
    assert sync(schedules, tenant, None) == "no snapshot schedule"
    assert schedules.names() == set()


def test_reconcile_repairs_drift_from_one_listing(schedules: Schedules, aws: Any) -> None:
    schedules.put(snapshot_schedule(config("ab-0002")))  # type: ignore[arg-type]  # a tenant since removed
    configs = {"xy-0146": config(), "cd-0003": config("cd-0003", daily_at=None)}
    assert reconcile(schedules, configs) == {"schedules_created": 1, "schedules_deleted": 1}
    assert schedules.names() == {"snapshot-xy-0146"}
    assert reconcile(schedules, configs) == {"schedules_created": 0, "schedules_deleted": 0}


def test_the_sweep_repairs_the_schedules_from_the_configs_it_walks(pipeline, aws: Any, monkeypatch: Any) -> None:
    """A tenant whose config has a schedule but whose schedule is missing gets it back at the next sweep."""
    from chalicelib.usecases.sweep import run_sweep
    from tests.test_operator_control import configure

    aws.client("scheduler").create_schedule_group(Name="tierlift-dev")
    settings = pipeline.deps.settings._replace(scheduler_role_arn=ROLE, event_bus_arn=BUS)
    monkeypatch.setattr(pipeline.deps, "settings", settings)
    pipeline.deps.__dict__.pop("schedules", None)  # the cached adapter, rebuilt from the settings
    configure(pipeline, tenant_level={"snapshot_schedule": {"daily_at": "02:00"}})
    result = run_sweep(pipeline.deps)
    assert result.schedules == {"schedules_created": 1, "schedules_deleted": 0}
    assert pipeline.deps.schedules.names() == {"snapshot-xy-0146"}
    assert run_sweep(pipeline.deps).schedules == {"schedules_created": 0, "schedules_deleted": 0}
