"""Small adapters around boto3: one verb each, pagination inside, "not found" as ``None``.

Clients use botocore's ``standard`` retry mode (throttling and transient errors are retried with
backoff by botocore itself). Endpoints come from botocore's own configuration, so ``AWS_ENDPOINT_URL``
points the very same code at the local cloud.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.domain.events import OutboundEvent
from chalicelib.domain.images import EcrImage, by_digest
from chalicelib.domain.names import dict_to_tags, tags_to_dict

logger = logging.getLogger(__name__)

RETRY_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=5, read_timeout=30)
PUT_EVENTS_BATCH = 10
_RETRYABLE_PUT_EVENTS = {"InternalFailure", "ThrottlingException"}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def client(service: str, session: boto3.session.Session | None = None) -> Any:
    return (session or boto3.session.Session()).client(service, config=RETRY_CONFIG)  # type: ignore[call-overload]


class Rds:
    def __init__(self, rds: Any) -> None:
        self.client = rds

    @property
    def region(self) -> str:
        return str(self.client.meta.region_name)

    def create_snapshot(self, snapshot_id: str, instance_id: str, tags: dict[str, str]) -> bool:
        """Start a manual snapshot; False when one of that name already exists (a duplicate request)."""
        try:
            self.client.create_db_snapshot(
                DBSnapshotIdentifier=snapshot_id, DBInstanceIdentifier=instance_id, Tags=dict_to_tags(tags)
            )
        except ClientError as exc:
            if error_code(exc) == "DBSnapshotAlreadyExists":
                return False
            raise
        return True

    def describe_snapshot(self, snapshot_id: str) -> dict[str, Any] | None:
        try:
            snaps = self.client.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"]
        except ClientError as exc:
            if error_code(exc) == "DBSnapshotNotFound":
                return None
            raise
        return snaps[0] if snaps else None

    def engine_offered(self, engine: str, version: str) -> bool:
        """Does RDS offer ``engine`` ``version`` in this region (``DescribeDBEngineVersions``)? A retired
        minor is not listed: a snapshot of it cannot be restored."""
        found = self.client.describe_db_engine_versions(Engine=engine, EngineVersion=version)
        return any(v.get("EngineVersion") == version for v in found.get("DBEngineVersions", []))

    def copy_snapshot(self, source_id: str, target_id: str, kms_key_id: str, tags: dict[str, str]) -> bool:
        """Start an encrypted copy of a snapshot (``CopyDBSnapshot`` with ``KmsKeyId``, asynchronous: RDS
        emits RDS-EVENT-0197 when it is done); False when a snapshot of that name already exists."""
        try:
            self.client.copy_db_snapshot(
                SourceDBSnapshotIdentifier=source_id,
                TargetDBSnapshotIdentifier=target_id,
                KmsKeyId=kms_key_id,
                CopyTags=True,
                Tags=dict_to_tags(tags),
            )
        except ClientError as exc:
            if error_code(exc) == "DBSnapshotAlreadyExists":
                return False
            raise
        return True

    def snapshots(self, *, instance_id: str | None = None, snapshot_type: str = "manual") -> Iterator[dict[str, Any]]:
        """Every snapshot of that type (of one instance, when given), paginated."""
        kwargs: dict[str, Any] = {"SnapshotType": snapshot_type}
        if instance_id:
            kwargs["DBInstanceIdentifier"] = instance_id
        for page in self.client.get_paginator("describe_db_snapshots").paginate(**kwargs):
            yield from page.get("DBSnapshots", [])

    def delete_snapshot(self, snapshot_id: str) -> bool:
        try:
            self.client.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
        except ClientError as exc:
            if error_code(exc) == "DBSnapshotNotFound":
                return False
            raise
        return True

    def instances(self) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("describe_db_instances").paginate():
            yield from page.get("DBInstances", [])

    def tag(self, arn: str, tags: dict[str, str]) -> None:
        self.client.add_tags_to_resource(ResourceName=arn, Tags=dict_to_tags(tags))

    def describe_instance(self, instance_id: str) -> dict[str, Any] | None:
        try:
            found = self.client.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
        except ClientError as exc:
            if error_code(exc) == "DBInstanceNotFound":
                return None
            raise
        return found[0] if found else None

    def quotas(self) -> dict[str, tuple[int, int]]:
        """The account's RDS quotas: name -> (used, max) (``DescribeAccountAttributes``)."""
        quotas = self.client.describe_account_attributes().get("AccountQuotas", [])
        return {str(q["AccountQuotaName"]): (int(q.get("Used", 0)), int(q.get("Max", 0))) for q in quotas}


class Stacks:
    def __init__(self, cfn: Any, role_arn: str | None = None) -> None:
        self.client = cfn
        # The CloudFormation service role (TIERLIFT_CFN_ROLE_ARN): CloudFormation creates and deletes DB
        # stacks with its permissions, not the Lambda's. None (locally): no RoleARN.
        self.role_arn = role_arn
        self._role: dict[str, str] = {"RoleARN": role_arn} if role_arn else {}

    def create(
        self, name: str, template: str, parameters: dict[str, str], tags: dict[str, str], token: str
    ) -> str | None:
        """Create a stack and return its id; None when a stack of that name already exists."""
        try:
            created = self.client.create_stack(
                StackName=name,
                TemplateBody=template,
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
                Tags=dict_to_tags(tags),
                ClientRequestToken=token[:128],
                OnFailure="ROLLBACK",
                **self._role,
            )
        except ClientError as exc:
            if error_code(exc) == "AlreadyExistsException":
                return None
            raise
        return str(created["StackId"])

    def describe(self, name: str) -> dict[str, Any] | None:
        """The live stack of that name, or None when there is none (deleted stacks count as none)."""
        try:
            stacks = self.client.describe_stacks(StackName=name)["Stacks"]
        except ClientError as exc:
            if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
                return None
            raise
        for stack in stacks:
            if stack.get("StackStatus") != "DELETE_COMPLETE":
                return stack
        return None

    def describe_id(self, stack_id: str) -> dict[str, Any] | None:
        """The stack with that id (ARN), deleted or not: the very stack an event is about, never a later
        stack that took its name. None when CloudFormation no longer knows it."""
        try:
            stacks = self.client.describe_stacks(StackName=stack_id)["Stacks"]
        except ClientError as exc:
            if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
                return None
            raise
        return next((s for s in stacks if s.get("StackId") == stack_id), stacks[0] if stacks else None)

    def failure_reasons(self, name: str) -> list[str]:
        """The status reasons of the stack's failed resources (why a create rolled back)."""
        reasons: list[str] = []
        for page in self.client.get_paginator("describe_stack_events").paginate(StackName=name):
            for event in page.get("StackEvents", []):
                if str(event.get("ResourceStatus", "")).endswith("FAILED") and event.get("ResourceStatusReason"):
                    reasons.append(str(event["ResourceStatusReason"]))
        return reasons

    def deleted_names(self) -> set[str]:
        """Names of stacks deleted in the last ~90 days (CloudFormation's ``list_stacks`` keeps them)."""
        names: set[str] = set()
        for page in self.client.get_paginator("list_stacks").paginate(StackStatusFilter=["DELETE_COMPLETE"]):
            names.update(s["StackName"] for s in page.get("StackSummaries", []))
        return names

    def delete(self, name: str) -> None:
        """Ask CloudFormation to delete the stack (a no-op for a stack that is gone)."""
        self.client.delete_stack(StackName=name, **self._role)

    def all(self) -> Iterator[dict[str, Any]]:
        """Every live stack with its tags and outputs, paginated ``describe_stacks``."""
        for page in self.client.get_paginator("describe_stacks").paginate():
            for stack in page.get("Stacks", []):
                if stack.get("StackStatus") != "DELETE_COMPLETE":
                    yield stack

    @staticmethod
    def tags(stack: dict[str, Any]) -> dict[str, str]:
        return tags_to_dict(stack.get("Tags"))

    @staticmethod
    def outputs(stack: dict[str, Any]) -> dict[str, str]:
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", []) or []}


class Services:
    """ECS: services and task definitions."""

    def __init__(self, ecs: Any) -> None:
        self.client = ecs

    def describe_service(self, cluster: str, service: str) -> dict[str, Any] | None:
        try:
            found = self.client.describe_services(cluster=cluster, services=[service])
        except ClientError as exc:
            if error_code(exc) == "ClusterNotFoundException":
                return None
            raise
        for svc in found.get("services", []):
            if svc.get("status") != "INACTIVE":
                return svc
        return None

    def describe_task_definition(self, arn: str) -> tuple[dict[str, Any], dict[str, str]]:
        found = self.client.describe_task_definition(taskDefinition=arn, include=["TAGS"])
        tags = {t["key"]: t["value"] for t in found.get("tags", []) or []}
        return found["taskDefinition"], tags

    def register_keys(self) -> tuple[str, ...]:
        """``RegisterTaskDefinition``'s input members, from the client's own service model."""
        shape = self.client.meta.service_model.operation_model("RegisterTaskDefinition").input_shape
        return tuple(shape.members)

    def register_task_definition(self, spec: dict[str, Any], tags: dict[str, str]) -> str:
        spec = dict(spec)
        spec["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        return str(self.client.register_task_definition(**spec)["taskDefinition"]["taskDefinitionArn"])

    def update_service(
        self, cluster: str, service: str, task_definition: str, *, force: bool = False
    ) -> dict[str, Any]:
        return dict(
            self.client.update_service(
                cluster=cluster,
                service=service,
                taskDefinition=task_definition,
                forceNewDeployment=force,
                deploymentConfiguration={
                    "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                    "maximumPercent": 200,
                    "minimumHealthyPercent": 100,
                },
            )["service"]
        )

    def create_service(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.create_service(**spec)["service"])


class Images:
    """ECR: the digest an image tag points at now (one ``DescribeImages``, only for a tag)."""

    def __init__(self, ecr: Any) -> None:
        self.client = ecr

    def pin(self, image: str) -> str:
        """``image`` by digest: unchanged when it already is one or is not in a private ECR registry."""
        if by_digest(image):
            return image
        ecr = EcrImage.parse(image)
        if ecr is None:
            return image
        found = self.client.describe_images(
            registryId=ecr.account, repositoryName=ecr.repository, imageIds=[{"imageTag": ecr.tag or "latest"}]
        )
        details = found.get("imageDetails") or []
        if not details or not details[0].get("imageDigest"):
            raise LookupError(f"image {image} has no digest in ECR")
        return ecr.pinned(str(details[0]["imageDigest"]))


class Secrets:
    """Secrets Manager: the tags of a secret (RDS tags its managed secrets with the DB instance's ARN)."""

    def __init__(self, secretsmanager: Any) -> None:
        self.client = secretsmanager

    def tags(self, secret_id: str) -> dict[str, str] | None:
        try:
            found = self.client.describe_secret(SecretId=secret_id)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        return {t["Key"]: t["Value"] for t in found.get("Tags", []) or []}


class PutEventsFailed(RuntimeError):
    """Some events could not be put after botocore's retries and one entry-level retry."""


class Bus:
    """EventBridge ``put_events`` for tierlift's own events: batches of 10, failed entries retried once."""

    def __init__(self, events: Any, bus_name: str = "default") -> None:
        self.client = events
        self.bus_name = bus_name

    def _entry(self, event: OutboundEvent) -> dict[str, Any]:
        return {
            "Source": event.source,
            "DetailType": event.detail_type,
            "Detail": json.dumps(event.detail, sort_keys=True, default=str),
            "Resources": list(event.resources),
            "EventBusName": self.bus_name,
        }

    def put(self, events: Iterable[OutboundEvent]) -> list[str]:
        entries = [self._entry(e) for e in events]
        ids: list[str] = []
        for start in range(0, len(entries), PUT_EVENTS_BATCH):
            ids.extend(self._put_batch(entries[start : start + PUT_EVENTS_BATCH]))
        return ids

    def _put_batch(self, batch: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = [""] * len(batch)
        pending = list(range(len(batch)))
        for attempt in range(2):
            response = self.client.put_events(Entries=[batch[i] for i in pending])
            retry: list[int] = []
            for index, result in zip(pending, response.get("Entries", []), strict=False):
                if "EventId" in result and not result.get("ErrorCode"):
                    ids[index] = result["EventId"]
                elif result.get("ErrorCode") in _RETRYABLE_PUT_EVENTS and attempt == 0:
                    retry.append(index)
                else:
                    raise PutEventsFailed(
                        f"{batch[index]['DetailType']}: {result.get('ErrorCode')} {result.get('ErrorMessage')}"
                    )
            if not retry:
                return ids
            pending = retry
        raise PutEventsFailed(f"{len(pending)} events still failing after a retry")
