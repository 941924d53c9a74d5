"""AWS's own event envelopes, as EventBridge delivers them (shapes of ``tests/events``).

Each builder returns a PutEvents entry (``Source``, ``DetailType``, ``Detail`` as a JSON string,
``Resources``, ``Time``), so the event goes through moto's EventBridge and its rule matching like any
other event.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

ACCOUNT = "123456789012"

RDS_SNAPSHOT_MESSAGES = {
    "RDS-EVENT-0040": "Creating manual snapshot",
    "RDS-EVENT-0041": "Deleted manual snapshot",
    "RDS-EVENT-0042": "Manual snapshot created",
    "RDS-EVENT-0090": "Creating automated snapshot",
    "RDS-EVENT-0091": "Automated snapshot created",
    "RDS-EVENT-0196": "Started copy of snapshot {name} in region {region}",
    "RDS-EVENT-0197": "Finished copy of snapshot {name} in region {region}",
}
RDS_SNAPSHOT_CATEGORIES = {
    "RDS-EVENT-0041": "deletion",
    "RDS-EVENT-0196": "notification",
    "RDS-EVENT-0197": "notification",
}


def now() -> datetime:
    return datetime.now(UTC)


def _ms(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def entry(
    source: str, detail_type: str, detail: dict[str, Any], resources: list[str], when: datetime
) -> dict[str, Any]:
    """A PutEvents entry (``Time`` keeps the event's own time, as AWS services set it)."""
    return {
        "Source": source,
        "DetailType": detail_type,
        "Detail": json.dumps(detail, sort_keys=True),
        "Resources": resources,
        "Time": when.timestamp(),
    }


def rds_snapshot(
    event_id: str, snapshot_id: str, region: str, when: datetime, account: str = ACCOUNT
) -> dict[str, Any]:
    """``RDS DB Snapshot Event`` (0040/0042 manual, 0090/0091 automated, 0041 manual deleted, 0196/0197 a
    local copy started/finished)."""
    arn = f"arn:aws:rds:{region}:{account}:snapshot:{snapshot_id}"
    return entry(
        "aws.rds",
        "RDS DB Snapshot Event",
        {
            "EventCategories": [RDS_SNAPSHOT_CATEGORIES.get(event_id, "creation")],
            "SourceType": "SNAPSHOT",
            "SourceArn": arn,
            "Date": _ms(when),
            "Message": RDS_SNAPSHOT_MESSAGES[event_id].format(name=snapshot_id, region=region),
            "SourceIdentifier": snapshot_id,
            "EventID": event_id,
        },
        [arn],
        when,
    )


def rds_instance(
    event_id: str, instance_id: str, message: str, category: str, region: str, when: datetime, account: str = ACCOUNT
) -> dict[str, Any]:
    """``RDS DB Instance Event`` (e.g. RDS-EVENT-0043 restored from snapshot, 0003 deleted)."""
    arn = f"arn:aws:rds:{region}:{account}:db:{instance_id}"
    return entry(
        "aws.rds",
        "RDS DB Instance Event",
        {
            "EventCategories": [category],
            "SourceType": "DB_INSTANCE",
            "SourceArn": arn,
            "Date": _ms(when),
            "Message": message,
            "SourceIdentifier": instance_id,
            "EventID": event_id,
        },
        [arn],
        when,
    )


def stack_status(stack_id: str, status: str, reason: str, when: datetime, token: str = "") -> dict[str, Any]:
    """``CloudFormation Stack Status Change``."""
    return entry(
        "aws.cloudformation",
        "CloudFormation Stack Status Change",
        {
            "stack-id": stack_id,
            "status-details": {"status": status, "status-reason": reason},
            "client-request-token": token,
        },
        [stack_id],
        when,
    )


def resource_status(
    stack_id: str,
    logical_id: str,
    physical_id: str,
    resource_type: str,
    status: str,
    reason: str,
    when: datetime,
) -> dict[str, Any]:
    """``CloudFormation Resource Status Change``."""
    return entry(
        "aws.cloudformation",
        "CloudFormation Resource Status Change",
        {
            "stack-id": stack_id,
            "logical-resource-id": logical_id,
            "physical-resource-id": physical_id,
            "status-details": {"status": status, "status-reason": reason},
            "resource-type": resource_type,
            "client-request-token": "",
        },
        [stack_id],
        when,
    )


def ecs_deployment(
    event_name: str,
    deployment_id: str,
    cluster: str,
    service: str,
    region: str,
    when: datetime,
    reason: str | None = None,
    account: str = ACCOUNT,
) -> dict[str, Any]:
    """``ECS Deployment State Change`` (IN_PROGRESS / COMPLETED: INFO, FAILED: ERROR)."""
    if reason is None:
        reason = {
            "SERVICE_DEPLOYMENT_IN_PROGRESS": f"ECS deployment {deployment_id} in progress.",
            "SERVICE_DEPLOYMENT_COMPLETED": f"ECS deployment {deployment_id} completed.",
            "SERVICE_DEPLOYMENT_FAILED": "ECS deployment circuit breaker: task failed to start.",
        }[event_name]
    return entry(
        "aws.ecs",
        "ECS Deployment State Change",
        {
            "eventType": "ERROR" if event_name == "SERVICE_DEPLOYMENT_FAILED" else "INFO",
            "eventName": event_name,
            "deploymentId": deployment_id,
            "updatedAt": _ms(when),
            "reason": reason,
        },
        [f"arn:aws:ecs:{region}:{account}:service/{cluster}/{service}"],
        when,
    )


def scheduled(rule_arn: str, when: datetime, event_id: str, region: str, account: str = ACCOUNT) -> dict[str, Any]:
    """The ``Scheduled Event`` a schedule rule delivers to its targets (an envelope, not an entry)."""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def secret_rotation(secret_arn: str, region: str, when: datetime, account: str = ACCOUNT) -> dict[str, Any]:
    """Secrets Manager's ``RotationSucceeded``, as CloudTrail puts it on the default bus."""
    return entry(
        "aws.secretsmanager",
        "AWS Service Event via CloudTrail",
        {
            "eventVersion": "1.08",
            "userIdentity": {"accountId": account, "invokedBy": "secretsmanager.amazonaws.com"},
            "eventTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "RotationSucceeded",
            "awsRegion": region,
            "sourceIPAddress": "secretsmanager.amazonaws.com",
            "userAgent": "secretsmanager.amazonaws.com",
            "requestParameters": None,
            "responseElements": None,
            "additionalEventData": {"SecretId": secret_arn},
            "readOnly": False,
            "eventType": "AwsServiceEvent",
            "managementEvent": True,
            "recipientAccountId": account,
            "eventCategory": "Management",
        },
        [],
        when,
    )
