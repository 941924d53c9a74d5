"""EventBridge Scheduler: the stage's schedule group of snapshot schedules."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.aws import error_code
from chalicelib.domain.schedules import PREFIX, ScheduleSpec

SNAPSHOT_REQUESTED = "Snapshot Requested"


class Schedules:
    """Snapshot schedules in ``group``, each targeting tierlift's bus (``bus_arn``) through ``role_arn``."""

    def __init__(self, client: Any, group: str, bus_arn: str, role_arn: str) -> None:
        self.client, self.group, self.bus_arn, self.role_arn = client, group, bus_arn, role_arn

    def _target(self, spec: ScheduleSpec) -> dict[str, Any]:
        return {
            "Arn": self.bus_arn,
            "RoleArn": self.role_arn,
            "Input": spec.detail,
            "EventBridgeParameters": {"DetailType": SNAPSHOT_REQUESTED, "Source": "tierlift"},
            "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 10},
        }

    def put(self, spec: ScheduleSpec) -> str:
        """Create the schedule, or update it to ``spec``: "created" or "updated"."""
        args = {
            "Name": spec.name,
            "GroupName": self.group,
            "ScheduleExpression": spec.expression,
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": self._target(spec),
            "Description": "tierlift: the tenant's daily source snapshot",
        }
        try:
            self.client.create_schedule(**args)
            return "created"
        except ClientError as exc:
            if error_code(exc) != "ConflictException":
                raise
        self.client.update_schedule(**args)
        return "updated"

    def delete(self, name: str) -> bool:
        try:
            self.client.delete_schedule(Name=name, GroupName=self.group)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return False
            raise
        return True

    def names(self) -> set[str]:
        """The snapshot schedules of the group (one paginated listing)."""
        found: set[str] = set()
        for page in self.client.get_paginator("list_schedules").paginate(GroupName=self.group, NamePrefix=PREFIX):
            found.update(str(s["Name"]) for s in page.get("Schedules", []))
        return found
