"""What a tenant looks like right now: per environment, the active version, its DB and its service."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.names import Tenant


def _param(ssm: Any, name: str) -> str | None:
    try:
        return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ParameterNotFound":
            return None
        raise


def _stack(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError:
        return None
    return stacks[0] if stacks else None


def tenant_status(session: boto3.session.Session, tenant: str, ssm_root: str = "/tierlift") -> list[dict[str, Any]]:
    """One row per environment of the tenant's config (the source environment included)."""
    Tenant.parse(tenant)
    ssm, cfn, ecs = session.client("ssm"), session.client("cloudformation"), session.client("ecs")
    raw = _param(ssm, f"{ssm_root}/{tenant}/config")
    if raw is None:
        raise LookupError(f"tenant {tenant} has no config at {ssm_root}/{tenant}/config")
    config = json.loads(raw)
    rows: list[dict[str, Any]] = []
    for env in config.get("environments", []):
        row: dict[str, Any] = {"namespace": f"{tenant}-{env}", "environment": env}
        if env == config.get("source", {}).get("environment"):
            row.update(active="(source)", db=config["source"].get("db_instance", ""), stack="-", service="-")
            rows.append(row)
            continue
        base = f"{ssm_root}/{tenant}/{env}"
        active = _param(ssm, f"{base}/active")
        promotion = _param(ssm, f"{base}/promotion")
        row["active"] = active or "-"
        row["in_flight"] = json.loads(promotion).get("stage") if promotion else "-"
        stack = _stack(cfn, f"{tenant}-{env}-db-{active}") if active else None
        row["stack"] = stack["StackStatus"] if stack else "-"
        db = _param(ssm, f"{base}/db/{active}") if active else None
        row["db"] = json.loads(db).get("endpoint", "-") if db else "-"
        target = config.get("targets", {}).get(env, {})
        row["service"], row["image"], row["version_in_task"], row["rollout"] = "-", "-", "-", "-"
        if target:
            services = ecs.describe_services(cluster=target["cluster"], services=[target["service"]]).get(
                "services", []
            )
            live = [s for s in services if s.get("status") != "INACTIVE"]
            if live:
                service = live[0]
                task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
                container = next(
                    (c for c in task["containerDefinitions"] if c["name"] == target.get("container")),
                    task["containerDefinitions"][0],
                )
                env_vars = {e["name"]: e["value"] for e in container.get("environment", [])}
                primary: dict[str, Any] = next(
                    (d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {}
                )
                row["service"] = f"{target['service']}:{task['revision']}"
                row["image"] = container.get("image", "-")
                row["version_in_task"] = env_vars.get("TIERLIFT_VERSION", "-")
                row["rollout"] = f"{primary.get('rolloutState', '-')} ({len(service.get('deployments', []))})"
        rows.append(row)
    return rows


COLUMNS = ("namespace", "active", "in_flight", "stack", "db", "service", "image", "version_in_task", "rollout")


def render_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    """A plain text table; long values are cut to keep it readable."""
    cells = [[str(row.get(c, "-"))[:48] for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body])
