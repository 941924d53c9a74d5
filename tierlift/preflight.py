"""What a tenant config names that does not exist in the account: ``tenant register`` refuses to store a
config while anything is missing (``--no-check`` stores it anyway) and ``status TENANT`` warns about it.

One ``Describe*`` call per named resource (the source DB instance, each target's ECS cluster, service
and container, DB subnet group and security groups, the task subnets and security groups). Read only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.domain.config import Target, TenantConfig

NOT_FOUND = {
    "DBInstanceNotFound",
    "DBInstanceNotFoundFault",
    "DBSubnetGroupNotFoundFault",
    "DBSubnetGroupNotFound",
    "ClusterNotFoundException",
    "ServiceNotFoundException",
    "InvalidGroup.NotFound",
    "InvalidGroupId.Malformed",
    "InvalidSubnetID.NotFound",
    "InvalidSubnetID.Malformed",
}


@dataclass(frozen=True)
class Missing:
    """One thing the config names that does not exist: in which environment, what, and the config field."""

    environment: str
    what: str
    field: str

    def line(self) -> str:
        return f"{self.environment}: {self.what} ({self.field})"

    def as_dict(self) -> dict[str, str]:
        return {"environment": self.environment, "what": self.what, "field": self.field}


class CheckFailed(RuntimeError):
    """A describe call failed for another reason than "not found" (permissions, throttling)."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class Checker:
    """The describe calls, each answer kept (a cluster or subnet shared by targets is asked once)."""

    def __init__(self, session: boto3.session.Session, client: Any = None) -> None:
        make = client or (lambda service: session.client(service))
        self.rds, self.ecs, self.ec2 = make("rds"), make("ecs"), make("ec2")
        self._seen: dict[tuple[str, str], Any] = {}

    def _ask(self, kind: str, name: str, call: Any) -> Any:
        """``call()``'s answer, None when the resource does not exist."""
        key = (kind, name)
        if key not in self._seen:
            try:
                self._seen[key] = call()
            except ClientError as exc:
                if _code(exc) not in NOT_FOUND:
                    raise CheckFailed(f"cannot check {kind} {name}: {_code(exc)}") from None
                self._seen[key] = None
        return self._seen[key]

    def db_instance(self, name: str) -> bool:
        found = self._ask("DB instance", name, lambda: self.rds.describe_db_instances(DBInstanceIdentifier=name))
        return bool(found and found.get("DBInstances"))

    def subnet_group(self, name: str) -> bool:
        found = self._ask("DB subnet group", name, lambda: self.rds.describe_db_subnet_groups(DBSubnetGroupName=name))
        return bool(found and found.get("DBSubnetGroups"))

    def security_group(self, group: str) -> bool:
        found = self._ask("security group", group, lambda: self.ec2.describe_security_groups(GroupIds=[group]))
        return bool(found and found.get("SecurityGroups"))

    def subnet(self, subnet: str) -> bool:
        found = self._ask("subnet", subnet, lambda: self.ec2.describe_subnets(SubnetIds=[subnet]))
        return bool(found and found.get("Subnets"))

    def cluster(self, name: str) -> bool:
        found = self._ask("ECS cluster", name, lambda: self.ecs.describe_clusters(clusters=[name]))
        return any(c.get("status") == "ACTIVE" for c in (found or {}).get("clusters", []))

    def service(self, cluster: str, name: str) -> dict[str, Any] | None:
        found = self._ask(
            "ECS service", f"{cluster}/{name}", lambda: self.ecs.describe_services(cluster=cluster, services=[name])
        )
        live = [s for s in (found or {}).get("services", []) if s.get("status") != "INACTIVE"]
        return live[0] if live else None

    def containers(self, task_definition: str) -> list[str]:
        found = self._ask(
            "task definition",
            task_definition,
            lambda: self.ecs.describe_task_definition(taskDefinition=task_definition),
        )
        return [str(c.get("name")) for c in ((found or {}).get("taskDefinition") or {}).get("containerDefinitions", [])]


def _target(check: Checker, env: str, target: Target) -> list[Missing]:
    where = f"targets.{env}"
    out: list[Missing] = []
    if not check.cluster(target.cluster):
        out.append(Missing(env, f"ECS cluster {target.cluster}", f"{where}.cluster"))
    else:
        service = check.service(target.cluster, target.service)
        creatable = bool(target.task.image and target.task.subnets)
        if service is None and not creatable:
            out.append(
                Missing(
                    env,
                    f"ECS service {target.service} in cluster {target.cluster} (or give {where}.task.image and "
                    f"{where}.task.subnets, and the first promotion creates it)",
                    f"{where}.service",
                )
            )
        elif service is not None:
            task_definition = str(service.get("taskDefinition", ""))
            names = check.containers(task_definition) if task_definition else []
            if target.container not in names:
                family = task_definition.rsplit("/", 1)[-1] or "(none)"
                has = ", ".join(names) or "none"
                out.append(
                    Missing(
                        env,
                        f"container {target.container} in the task definition {family} of service "
                        f"{target.service} (it has: {has})",
                        f"{where}.container",
                    )
                )
    if not check.subnet_group(target.db.subnet_group):
        out.append(Missing(env, f"DB subnet group {target.db.subnet_group}", f"{where}.db.subnet_group"))
    for group in target.db.security_groups:
        if not check.security_group(group):
            out.append(Missing(env, f"security group {group}", f"{where}.db.security_groups"))
    for subnet in target.task.subnets:
        if not check.subnet(subnet):
            out.append(Missing(env, f"subnet {subnet}", f"{where}.task.subnets"))
    for group in target.task.security_groups:
        if not check.security_group(group):
            out.append(Missing(env, f"security group {group}", f"{where}.task.security_groups"))
    return out


def missing(session: boto3.session.Session, config: TenantConfig, *, client: Any = None) -> list[Missing]:
    """Everything ``config`` names that does not exist, in the config's order (source first).

    Raises :class:`CheckFailed` when a describe call fails for another reason (the caller says so).
    """
    check = Checker(session, client)
    out: list[Missing] = []
    if not check.db_instance(config.source_db_instance):
        out.append(
            Missing(config.source_environment, f"source DB instance {config.source_db_instance}", "source.db_instance")
        )
    for env, target in config.targets.items():
        out.extend(_target(check, env, target))
    return out


def refusal(config: TenantConfig, found: list[Missing]) -> str:
    """The register refusal: what is missing, one per line, and the two ways on."""
    lines = [
        f"not registering {config.tenant}: {len(found)} thing(s) its config names do not exist:",
        *(f"  {m.line()}" for m in found),
        "create them first (docs/deploy.md: templates/common.yaml and templates/tenant.yaml), or fix the config;",
        "tierlift tenant register FILE --no-check stores it anyway (tierlift status TENANT then warns)",
    ]
    return "\n".join(lines)
