"""ECS specs: the task definition and the service a promotion registers or creates. Pure: no AWS."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chalicelib.domain.config import Target
from chalicelib.domain.model import DbRecord
from chalicelib.domain.names import Namespace, Version

DB_ENVIRONMENT = ("DB_HOST", "DB_PORT", "DB_NAME", "TIERLIFT_VERSION")
DB_SECRETS = ("TIERLIFT_DB", "DB_USER", "DB_PASSWORD")


class PromotionError(RuntimeError):
    """A deterministic problem (config, missing container, foreign stack) that fails the promotion."""


def task_definition_spec(
    current: dict[str, Any] | None,
    *,
    ns: Namespace,
    version: Version,
    target: Target,
    db: DbRecord,
    db_parameter: str,
    image: str | None,
    accepted_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """A copy of the service's task definition with this version's DB settings (and image).

    Without a current one (first promotion of a new environment), one is built from the target's
    ``task`` settings. ``accepted_keys`` are ``RegisterTaskDefinition``'s input members (from botocore's
    service model, so a key ECS adds is carried over). Raises :class:`PromotionError` when the target
    container is missing.
    """
    if current is None:
        image = image or target.task.image
        if not image:
            raise PromotionError(
                f"service {target.service} does not exist and neither the request nor config has an image"
            )
        spec: dict[str, Any] = {
            "family": ns.name,
            "networkMode": "awsvpc",
            "requiresCompatibilities": [target.task.launch_type],
            "cpu": target.task.cpu,
            "memory": target.task.memory,
            "containerDefinitions": [
                {
                    "name": target.container,
                    "image": image,
                    "essential": True,
                    "portMappings": [{"containerPort": target.task.port, "protocol": "tcp"}],
                }
            ],
        }
        if target.task.execution_role_arn:
            spec["executionRoleArn"] = target.task.execution_role_arn
    else:
        spec = {k: current[k] for k in accepted_keys if k != "tags" and current.get(k) not in (None, [], {})}
    containers = [dict(c) for c in spec["containerDefinitions"]]
    found = False
    for container in containers:
        if container.get("name") != target.container:
            continue
        found = True
        if image:
            container["image"] = image
        env = [e for e in container.get("environment", []) if e.get("name") not in DB_ENVIRONMENT]
        env += [
            {"name": "DB_HOST", "value": db.endpoint},
            {"name": "DB_PORT", "value": str(db.port)},
            {"name": "TIERLIFT_VERSION", "value": version.value},
        ]
        if db.database:
            env.append({"name": "DB_NAME", "value": db.database})
        container["environment"] = sorted(env, key=lambda e: e["name"])
        secrets = [s for s in container.get("secrets", []) if s.get("name") not in DB_SECRETS]
        secrets.append({"name": "TIERLIFT_DB", "valueFrom": db_parameter})
        if db.secret_arn:
            secrets.append({"name": "DB_USER", "valueFrom": f"{db.secret_arn}:username::"})
            secrets.append({"name": "DB_PASSWORD", "valueFrom": f"{db.secret_arn}:password::"})
        container["secrets"] = sorted(secrets, key=lambda s: s["name"])
    if not found:
        raise PromotionError(f"container {target.container!r} is not in the service's task definition")
    spec["containerDefinitions"] = containers
    return spec


def primary_deployment(service: dict[str, Any]) -> dict[str, Any] | None:
    return next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), None)


def create_service_spec(target: Target, ns: Namespace, task_definition: str, tags: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "cluster": target.cluster,
        "serviceName": target.service,
        "taskDefinition": task_definition,
        "desiredCount": target.task.desired_count,
        "launchType": target.task.launch_type,
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        },
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
        "propagateTags": "SERVICE",
    }
    if target.task.subnets:
        spec["networkConfiguration"] = {
            "awsvpcConfiguration": {
                "subnets": list(target.task.subnets),
                "securityGroups": list(target.task.security_groups),
                "assignPublicIp": "DISABLED",
            }
        }
    return spec
