"""The tenant config (``/tierlift/<tenant>/config``): parsing and validation.

Unknown fields are kept (``raw``) so an operator's extra keys survive a round trip; invalid ones raise
:class:`InvalidConfig` with a message that names the field.
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from typing import Any

from chalicelib.domain.cells import Cell, parse_cell
from chalicelib.domain.names import InvalidName, Namespace, Tenant, parse_environment
from chalicelib.domain.records import NamedTuple

# Pattern texts, compiled on first use by re's cache rather than at import (docs/performance.md)
_SG = r"^sg-[0-9a-f]{8,17}$"
_SUBNET = r"^subnet-[0-9a-f]{8,17}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,254}$"


DEFAULT_APPROVAL_TIMEOUT = 7 * 24 * 3600
_ACCOUNT = r"^[0-9]{12}$"
_PRINCIPAL = r"^arn:aws[a-z-]*:(iam|sts)::([0-9]{12}|\*):[A-Za-z0-9+=,.@_/*-]{1,512}$"
_IMAGE_PREFIX = r"^[a-z0-9][a-z0-9.:/_@-]{0,254}$"


class InvalidConfig(ValueError):
    """The tenant config is missing or does not validate; the message says which field."""


_KMS_KEY = r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+"


class DbSettings(NamedTuple):
    """A target's databases. The protection fields left unset (None) follow the environment: under
    approval (prod-like) deletion protection, Multi-AZ, 14 days of backups and Performance Insights;
    otherwise none of them and 7 days. Storage is always encrypted (``kms_key_id``: the key, else aws/rds)."""

    instance_class: str
    subnet_group: str
    security_groups: tuple[str, ...]
    secret_arn: str | None = None
    database: str | None = None
    kms_key_id: str | None = None
    deletion_protection: bool | None = None
    multi_az: bool | None = None
    backup_retention_days: int | None = None
    performance_insights: bool | None = None

    def stack_parameters(self, *, approval_required: bool, engine_version: str = "") -> dict[str, str]:
        """The DB stack's (``chalicelib/templates/database.yaml``) protection parameters for this target;
        ``engine_version``: the source snapshot's, verified against DescribeDBEngineVersions."""

        def flag(value: bool | None) -> str:
            return "true" if (approval_required if value is None else value) else "false"

        retention = self.backup_retention_days or (14 if approval_required else 7)
        return {
            "EngineVersion": engine_version,
            "StorageKmsKeyId": self.kms_key_id or "",
            # Off: the pipeline deletes each superseded version's DB (the stack's DeletionPolicy keeps a
            # final snapshot), and RDS refuses that under deletion protection; see _db.
            "DeletionProtection": "false",
            "MultiAZ": flag(self.multi_az),
            "BackupRetentionPeriod": str(retention),
            "EnablePerformanceInsights": flag(self.performance_insights),
        }


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
    # Principals (IAM/STS ARN patterns, ``*`` wildcards) whose signed approval opens the gate; empty:
    # any principal IAM lets call tierlift's API. ``override_by``: who may send a signed ``override``
    # (skip the earlier environment, another image); empty: nobody. ``two_person``: the approver must
    # not be the principal who signed the request (default: on where approval is required).
    approvers: tuple[str, ...] = ()
    override_by: tuple[str, ...] = ()
    two_person: bool = False

    def approver_allowed(self, principal: str) -> bool:
        return not self.approvers or any(fnmatchcase(principal, p) for p in self.approvers)

    def override_allowed(self, principal: str | None) -> bool:
        return principal is not None and any(fnmatchcase(principal, p) for p in self.override_by)


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
    # The account cell holding the tenant's databases, stacks and services (None: the central account).
    cell: Cell | None = None

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
            raise InvalidConfig(
                f"environment {environment!r} is not in tenant {self.tenant}'s config "
                f"(its targets: {', '.join(self.targets)})"
            ) from None

    def target_spec(self, environment: str) -> dict[str, Any]:
        """The target's settings as configured (JSON), kept in the lock of a promotion that starts."""
        self.target(environment)
        spec = self.raw["targets"][environment]
        return dict(spec) if isinstance(spec, dict) else {}

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
    if not isinstance(value, str) or not re.fullmatch(_NAME, value):
        raise InvalidConfig(f"{where} must be a resource name, got {value!r}")
    return value


def _ids(value: Any, pattern: str, where: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value):
        raise InvalidConfig(f"{where} must be a non-empty list")
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(pattern, item):
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
    key = value.get("kms_key_id")
    if key is not None and (not isinstance(key, str) or not re.fullmatch(_KMS_KEY, key)):
        raise InvalidConfig(f"{where}.kms_key_id must be a KMS key ARN")
    flags: dict[str, bool | None] = {}
    for field in ("deletion_protection", "multi_az", "performance_insights"):
        flag = value.get(field)
        if flag is not None and not isinstance(flag, bool):
            raise InvalidConfig(f"{where}.{field} must be true or false")
        flags[field] = flag
    if flags["deletion_protection"]:
        raise InvalidConfig(
            f"{where}.deletion_protection: true is not supported: tierlift deletes each superseded version's"
            " DB (its stack keeps a final snapshot), which RDS refuses under deletion protection; leave it"
            " out (a DB is deleted only by tierlift's role, only when superseded, never the active one)"
        )
    retention = value.get("backup_retention_days")
    if retention is not None and (
        isinstance(retention, bool) or not isinstance(retention, int) or not 1 <= retention <= 35
    ):
        raise InvalidConfig(f"{where}.backup_retention_days must be a whole number of days from 1 to 35")
    return DbSettings(
        instance_class=_name(_req(value, "instance_class", where), f"{where}.instance_class"),
        subnet_group=_name(_req(value, "subnet_group", where), f"{where}.subnet_group"),
        security_groups=_ids(_req(value, "security_groups", where), _SG, f"{where}.security_groups", required=True),
        secret_arn=secret,
        database=database,
        kms_key_id=key,
        backup_retention_days=retention,
        **flags,
    )


def same_principal(a: str, b: str) -> bool:
    """One caller behind two ARNs? Equal ARNs, or two role sessions with the same session name (with IAM
    Identity Center the session name is the user's own name, whatever role the user assumed)."""
    if a.lower() == b.lower():
        return True
    session_a, session_b = _session_name(a), _session_name(b)
    return session_a is not None and session_a == session_b


def _session_name(arn: str) -> str | None:
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        pieces = parts[5].split("/")
        return pieces[2].lower() if len(pieces) >= 3 else None
    return None


def _principals(spec: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(a, str) and re.fullmatch(_PRINCIPAL, a) for a in value):
        raise InvalidConfig(
            f"{where}.{key} must be a list of IAM role/user or STS session ARN patterns "
            "(arn:aws:sts::123456789012:assumed-role/Approvers/*)"
        )
    return tuple(value)


def _policy(spec: dict[str, Any], where: str, *, last: bool, approval: bool) -> Policy:
    required = spec.get("require_completed_before", last)
    if not isinstance(required, bool):
        raise InvalidConfig(f"{where}.require_completed_before must be true or false")
    images = spec.get("allowed_images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) and re.fullmatch(_IMAGE_PREFIX, i) for i in images):
        raise InvalidConfig(f"{where}.allowed_images must be a list of image repository prefixes")
    accounts = spec.get("accounts", [])
    if not isinstance(accounts, list) or not all(isinstance(a, str) and re.fullmatch(_ACCOUNT, a) for a in accounts):
        raise InvalidConfig(f"{where}.accounts must be a list of 12-digit AWS account ids")
    if approval and not images:
        raise InvalidConfig(
            f"{where}.allowed_images is required where approval is required: name the image repositories "
            "(prefixes) this environment may run"
        )
    two_person = spec.get("two_person", approval)
    if not isinstance(two_person, bool):
        raise InvalidConfig(f"{where}.two_person must be true or false")
    return Policy(
        require_completed_before=required,
        allowed_images=tuple(images),
        accounts=tuple(accounts),
        approvers=_principals(spec, "approvers", where),
        override_by=_principals(spec, "override_by", where),
        two_person=two_person,
    )


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


def parse_target(env: str, spec: dict[str, Any], *, last: bool) -> Target:
    """One environment's target (``config.targets.<env>``); ``last``: the last environment, whose
    ``require_completed_before`` defaults to true. The lock keeps the spec a promotion started with."""
    where = f"config.targets.{env}"
    if not isinstance(spec, dict):
        raise InvalidConfig(f"{where} must be an object")
    approval, timeout = _approval(spec, where)
    return Target(
        environment=env,
        cluster=_name(_req(spec, "cluster", where), f"{where}.cluster"),
        service=_name(_req(spec, "service", where), f"{where}.service"),
        container=_name(_req(spec, "container", where), f"{where}.container"),
        db=_db(_req(spec, "db", where), f"{where}.db"),
        task=_task(spec.get("task"), f"{where}.task"),
        approval_required=approval,
        approval_timeout=timeout,
        policy=_policy(spec, where, last=last, approval=approval),
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
            spec = targets_raw.get(env)
            if not isinstance(spec, dict):
                raise InvalidConfig(f"config.targets.{env} is missing: every environment but the source needs a target")
            targets[env] = parse_target(env, spec, last=env == envs[-1])
        for env in automatic:
            if env not in targets:
                raise InvalidConfig(f"config.automatic names {env!r}, which is not a target environment")
        try:
            cell = parse_cell(raw.get("cell"))
        except ValueError as exc:
            raise InvalidConfig(str(exc)) from None
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
        cell=cell,
    )
