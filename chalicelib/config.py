"""The tenant config (``/tierlift/<tenant>/config``): parsing and validation.

Unknown fields are kept (``raw``) so an operator's extra keys survive a round trip; invalid ones raise
:class:`InvalidConfig` with a message that names the field.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from chalicelib.names import InvalidName, Namespace, Tenant, parse_environment

_SG = re.compile(r"^sg-[0-9a-f]{8,17}$")
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,254}$")


DEFAULT_APPROVAL_TIMEOUT = 7 * 24 * 3600
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_IMAGE_PREFIX = re.compile(r"^[a-z0-9][a-z0-9.:/_@-]{0,254}$")


class InvalidConfig(ValueError):
    """The tenant config is missing or does not validate; the message says which field."""


class DbSettings(NamedTuple):
    instance_class: str
    subnet_group: str
    security_groups: tuple[str, ...]
    secret_arn: str | None = None
    database: str | None = None


class TaskSettings(NamedTuple):
    """How to create the service when the environment has none yet (first promotion)."""

    image: str | None = None
    cpu: str = "256"
    memory: str = "512"
    port: int = 80
    desired_count: int = 1
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    launch_type: str = "FARGATE"
    execution_role_arn: str | None = None


class Policy(NamedTuple):
    """Who may promote what into an environment (checked before anything is written)."""

    require_completed_before: bool = False
    allowed_images: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()


class Target(NamedTuple):
    environment: str
    cluster: str
    service: str
    container: str
    db: DbSettings
    task: TaskSettings = TaskSettings()
    approval_required: bool = False
    approval_timeout: int = DEFAULT_APPROVAL_TIMEOUT
    policy: Policy = Policy()


class SnapshotSchedule(NamedTuple):
    """A daily source snapshot at ``hour``:``minute`` UTC."""

    hour: int
    minute: int


class TenantConfig(NamedTuple):
    tenant: Tenant
    environments: tuple[str, ...]
    source_environment: str
    source_db_instance: str
    automatic: tuple[str, ...]
    targets: dict[str, Target]
    raw: dict[str, Any]
    snapshot_schedule: SnapshotSchedule | None = None

    @property
    def source(self) -> Namespace:
        return self.tenant.namespace(self.source_environment)

    def namespace(self, environment: str) -> Namespace:
        return self.tenant.namespace(environment)

    def environment_before(self, environment: str) -> str:
        index = self.environments.index(environment)
        if index == 0:
            raise InvalidConfig(f"environment {environment!r} is first in the promotion order")
        return self.environments[index - 1]

    def target(self, environment: str) -> Target:
        if environment == self.source_environment:
            raise InvalidConfig(f"environment {environment!r} is the source environment; it is never a target")
        try:
            return self.targets[environment]
        except KeyError:
            raise InvalidConfig(f"environment {environment!r} is not in tenant {self.tenant}'s config") from None

    def target_for_service(self, cluster: str, service: str) -> Target | None:
        for target in self.targets.values():
            if target.service == service and target.cluster == cluster:
                return target
        return None

    def to_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True)


def _req(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise InvalidConfig(f"{where}.{key} is missing")
    return obj[key]


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidConfig(f"{where} must be a resource name, got {value!r}")
    return value


def _ids(value: Any, pattern: re.Pattern[str], where: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value):
        raise InvalidConfig(f"{where} must be a non-empty list")
    for item in value:
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise InvalidConfig(f"{where} has an invalid id {item!r}")
    return tuple(value)


def _db(value: Any, where: str) -> DbSettings:
    if not isinstance(value, dict):
        raise InvalidConfig(f"{where} must be an object")
    secret = value.get("secret_arn")
    if secret is not None and (not isinstance(secret, str) or not secret.startswith("arn:")):
        raise InvalidConfig(f"{where}.secret_arn must be an ARN")
    database = value.get("database")
    if database is not None and (
        not isinstance(database, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", database)
    ):
        raise InvalidConfig(f"{where}.database must be a MySQL database name")
    return DbSettings(
        instance_class=_name(_req(value, "instance_class", where), f"{where}.instance_class"),
        subnet_group=_name(_req(value, "subnet_group", where), f"{where}.subnet_group"),
        security_groups=_ids(_req(value, "security_groups", where), _SG, f"{where}.security_groups", required=True),
        secret_arn=secret,
        database=database,
    )


def _policy(spec: dict[str, Any], where: str, *, last: bool) -> Policy:
    required = spec.get("require_completed_before", last)
    if not isinstance(required, bool):
        raise InvalidConfig(f"{where}.require_completed_before must be true or false")
    images = spec.get("allowed_images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) and _IMAGE_PREFIX.fullmatch(i) for i in images):
        raise InvalidConfig(f"{where}.allowed_images must be a list of image repository prefixes")
    accounts = spec.get("accounts", [])
    if not isinstance(accounts, list) or not all(isinstance(a, str) and _ACCOUNT.fullmatch(a) for a in accounts):
        raise InvalidConfig(f"{where}.accounts must be a list of 12-digit AWS account ids")
    return Policy(require_completed_before=required, allowed_images=tuple(images), accounts=tuple(accounts))


def _approval(spec: dict[str, Any], where: str) -> tuple[bool, int]:
    approval = spec.get("approval", "none")
    if approval not in ("required", "none"):
        raise InvalidConfig(f"{where}.approval must be 'required' or 'none'")
    timeout = spec.get("approval_timeout", DEFAULT_APPROVAL_TIMEOUT)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 60 <= timeout <= 30 * 24 * 3600:
        raise InvalidConfig(f"{where}.approval_timeout must be seconds between 60 and 30 days")
    return approval == "required", timeout


def _schedule(value: Any) -> SnapshotSchedule | None:
    if value is None:
        return None
    where = "config.snapshot_schedule"
    if not isinstance(value, dict) or not isinstance(value.get("daily_at"), str):
        raise InvalidConfig(f'{where} must be {{"daily_at": "HH:MM"}} (UTC)')
    match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", value["daily_at"])
    if not match:
        raise InvalidConfig(f"{where}.daily_at must be HH:MM (UTC), got {value['daily_at']!r}")
    return SnapshotSchedule(int(match[1]), int(match[2]))


def _task(value: Any, where: str) -> TaskSettings:
    if value is None:
        return TaskSettings()
    if not isinstance(value, dict):
        raise InvalidConfig(f"{where} must be an object")
    image = value.get("image")
    if image is not None and (not isinstance(image, str) or not image or len(image) > 255):
        raise InvalidConfig(f"{where}.image must be an image reference")
    count = value.get("desired_count", 1)
    port = value.get("port", 80)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 100:
        raise InvalidConfig(f"{where}.desired_count must be an integer 0-100")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidConfig(f"{where}.port must be a TCP port")
    role = value.get("execution_role_arn")
    if role is not None and (not isinstance(role, str) or not role.startswith("arn:")):
        raise InvalidConfig(f"{where}.execution_role_arn must be an ARN")
    launch = value.get("launch_type", "FARGATE")
    if launch not in ("FARGATE", "EC2"):
        raise InvalidConfig(f"{where}.launch_type must be FARGATE or EC2")
    return TaskSettings(
        image=image,
        cpu=str(value.get("cpu", "256")),
        memory=str(value.get("memory", "512")),
        port=port,
        desired_count=count,
        subnets=_ids(value.get("subnets"), _SUBNET, f"{where}.subnets", required=False),
        security_groups=_ids(value.get("security_groups"), _SG, f"{where}.security_groups", required=False),
        launch_type=launch,
        execution_role_arn=role,
    )


def parse_config(tenant: Tenant, text: str | dict[str, Any]) -> TenantConfig:
    """Validate a tenant config document; raise :class:`InvalidConfig` naming the first bad field."""
    try:
        raw = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise InvalidConfig(f"config of {tenant} is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidConfig(f"config of {tenant} must be a JSON object")
    try:
        if raw.get("tenant") != tenant.name:
            raise InvalidConfig(f"config.tenant is {raw.get('tenant')!r}, expected {tenant.name!r}")
        environments = _req(raw, "environments", "config")
        if not isinstance(environments, list) or len(environments) < 2:
            raise InvalidConfig("config.environments must list at least two environments in promotion order")
        envs = tuple(parse_environment(e) for e in environments)
        if len(set(envs)) != len(envs):
            raise InvalidConfig("config.environments lists an environment twice")
        source = _req(raw, "source", "config")
        if not isinstance(source, dict):
            raise InvalidConfig("config.source must be an object")
        source_env = parse_environment(_req(source, "environment", "config.source"))
        if source_env not in envs:
            raise InvalidConfig(f"config.source.environment {source_env!r} is not in config.environments")
        source_db = _name(_req(source, "db_instance", "config.source"), "config.source.db_instance")
        after_source = envs[envs.index(source_env) + 1 :]
        automatic_raw = raw.get("automatic", list(after_source[:1]))
        if not isinstance(automatic_raw, list):
            raise InvalidConfig("config.automatic must be a list of environments")
        automatic = tuple(parse_environment(e) for e in automatic_raw)
        targets_raw = _req(raw, "targets", "config")
        if not isinstance(targets_raw, dict):
            raise InvalidConfig("config.targets must be an object keyed by environment")
        targets: dict[str, Target] = {}
        for env in envs:
            if env == source_env:
                continue
            where = f"config.targets.{env}"
            spec = targets_raw.get(env)
            if not isinstance(spec, dict):
                raise InvalidConfig(f"{where} is missing: every environment but the source needs a target")
            approval, timeout = _approval(spec, where)
            targets[env] = Target(
                environment=env,
                cluster=_name(_req(spec, "cluster", where), f"{where}.cluster"),
                service=_name(_req(spec, "service", where), f"{where}.service"),
                container=_name(_req(spec, "container", where), f"{where}.container"),
                db=_db(_req(spec, "db", where), f"{where}.db"),
                task=_task(spec.get("task"), f"{where}.task"),
                approval_required=approval,
                approval_timeout=timeout,
                policy=_policy(spec, where, last=env == envs[-1]),
            )
        for env in automatic:
            if env not in targets:
                raise InvalidConfig(f"config.automatic names {env!r}, which is not a target environment")
    except InvalidName as exc:
        raise InvalidConfig(f"config of {tenant}: {exc}") from exc
    return TenantConfig(
        tenant=tenant,
        environments=envs,
        source_environment=source_env,
        source_db_instance=source_db,
        automatic=automatic,
        targets=targets,
        raw=raw,
        snapshot_schedule=_schedule(raw.get("snapshot_schedule")),
    )
