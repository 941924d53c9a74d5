"""The SSM repository: tenant config, ``active``, ``db/<version>``, the promotion record (the lock) and
the queue slot. The only module that knows the SSM layout of the contract.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any, Final, Self

from botocore.exceptions import ClientError

from chalicelib.config import InvalidConfig, TenantConfig, parse_config
from chalicelib.names import InvalidName, Namespace, Tenant, Version

logger = logging.getLogger(__name__)


class _Unread(Enum):
    TOKEN = 0


UNREAD: Final = _Unread.TOKEN
"""Marks an argument the caller has not read (see :meth:`StateStore.set_active`)."""

STAGES = ("requested", "restoring", "deploying", "finalizing", "completed", "failed", "rolled_back")


class _JsonRecord:
    """A dataclass stored as one JSON parameter; unknown keys are dropped when read back."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, text: str) -> Self:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Promotion(_JsonRecord):
    """The promotion in flight for one namespace; stored at ``/<root>/<tenant>/<env>/promotion``."""

    id: str
    tenant: str
    environment: str
    version: str
    stage: str
    previous: str | None
    requested_by: str = "unknown"
    image: str | None = None
    task_definition: str | None = None
    previous_task_definition: str | None = None
    deployment_id: str | None = None
    started: str = ""
    updated: str = ""
    reason: str | None = None

    @property
    def namespace(self) -> Namespace:
        return Tenant.parse(self.tenant).namespace(self.environment)

    @property
    def version_(self) -> Version:
        return Version.parse(self.version)

    @property
    def previous_version(self) -> Version | None:
        return Version.parse(self.previous) if self.previous else None


@dataclass
class QueuedRequest(_JsonRecord):
    """A ``Promotion Requested`` waiting for a busy environment (``/…/<env>/queued``)."""

    id: str
    tenant: str
    environment: str
    version: str | None = None
    image: str | None = None
    requested_by: str = "unknown"
    queued_at: str = ""


@dataclass
class DbRecord(_JsonRecord):
    """Connection facts of one version's DB (``/…/<env>/db/<version>``)."""

    stack: str
    instance: str
    endpoint: str
    port: int
    snapshot: str
    version: str
    secret_arn: str | None = None
    database: str | None = None


class UnknownTenant(LookupError):
    """No config parameter for that tenant."""


@dataclass
class Recorded:
    """A namespace's recorded state, read in one ``GetParameters`` call (see :meth:`StateStore.recorded`)."""

    namespace: Namespace
    config_text: str | None
    config_path: str
    active: Version | None
    promotion: Promotion | None
    queued: QueuedRequest | None

    def config(self) -> TenantConfig:
        """The tenant config; raises :class:`UnknownTenant` or :class:`InvalidConfig`."""
        if self.config_text is None:
            raise UnknownTenant(f"tenant {self.namespace.tenant} has no config at {self.config_path}")
        return parse_config(self.namespace.tenant, self.config_text)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class StateStore:
    """SSM Parameter Store under the contract's layout. Every write is idempotent."""

    def __init__(self, ssm: Any, root: str = "/tierlift") -> None:
        self._ssm = ssm
        self.root = root.rstrip("/")

    # paths -------------------------------------------------------------
    def config_path(self, tenant: Tenant) -> str:
        return f"{self.root}/{tenant.name}/config"

    def env_path(self, ns: Namespace) -> str:
        return f"{self.root}/{ns.tenant.name}/{ns.environment}"

    def active_path(self, ns: Namespace) -> str:
        return f"{self.env_path(ns)}/active"

    def db_path(self, ns: Namespace, version: Version) -> str:
        return f"{self.env_path(ns)}/db/{version}"

    def promotion_path(self, ns: Namespace) -> str:
        return f"{self.env_path(ns)}/promotion"

    def queued_path(self, ns: Namespace) -> str:
        return f"{self.env_path(ns)}/queued"

    # primitives -------------------------------------------------------
    def _get(self, name: str) -> str | None:
        try:
            return str(self._ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except ClientError as exc:
            if _code(exc) == "ParameterNotFound":
                return None
            raise

    def _put(self, name: str, value: str, *, overwrite: bool = True) -> bool:
        """Write ``value``; with ``overwrite=False`` return False when the parameter already exists."""
        try:
            self._ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=overwrite)
        except ClientError as exc:
            if not overwrite and _code(exc) == "ParameterAlreadyExists":
                return False
            raise
        return True

    def _delete(self, name: str) -> bool:
        try:
            self._ssm.delete_parameter(Name=name)
        except ClientError as exc:
            if _code(exc) == "ParameterNotFound":
                return False
            raise
        return True

    def get_by_path(self, path: str) -> dict[str, str]:
        """Every parameter below ``path`` (recursive, paginated): name -> value."""
        values: dict[str, str] = {}
        paginator = self._ssm.get_paginator("get_parameters_by_path")
        for page in paginator.paginate(Path=path, Recursive=True):
            for param in page.get("Parameters", []):
                values[param["Name"]] = param["Value"]
        return values

    def recorded(self, ns: Namespace) -> Recorded:
        """Config, ``active``, the promotion record and the queue slot of ``ns`` in one call."""
        names = [self.config_path(ns.tenant), self.active_path(ns), self.promotion_path(ns), self.queued_path(ns)]
        found = self._ssm.get_parameters(Names=names).get("Parameters", [])
        values = {p["Name"]: str(p["Value"]) for p in found}
        active = values.get(names[1])
        promotion = values.get(names[2])
        queued = values.get(names[3])
        return Recorded(
            namespace=ns,
            config_text=values.get(names[0]),
            config_path=names[0],
            active=Version.parse(active) if active is not None else None,
            promotion=Promotion.from_json(promotion) if promotion else None,
            queued=QueuedRequest.from_json(queued) if queued else None,
        )

    # tenant config ----------------------------------------------------
    def get_config(self, tenant: Tenant) -> TenantConfig:
        text = self._get(self.config_path(tenant))
        if text is None:
            raise UnknownTenant(f"tenant {tenant} has no config at {self.config_path(tenant)}")
        return parse_config(tenant, text)

    def put_config(self, config: TenantConfig) -> None:
        self._put(self.config_path(config.tenant), config.to_json())

    # active -------------------------------------------------------------
    def get_active(self, ns: Namespace) -> Version | None:
        text = self._get(self.active_path(ns))
        if text is None:
            return None
        try:
            return Version.parse(text)
        except InvalidName:
            logger.error("active parameter %s holds %r, not a version", self.active_path(ns), text)
            raise

    def set_active(self, ns: Namespace, version: Version | None, *, was: Version | _Unread | None = UNREAD) -> None:
        """Set ``active`` (no write when it already holds ``version``, so the history stays a promotion log).

        ``was`` is the value the caller read earlier in this invocation; without it, it is read here.
        """
        if version is None:
            self._delete(self.active_path(ns))
            return
        known = self.get_active(ns) if was is UNREAD else was
        if known == version:
            return
        self._put(self.active_path(ns), version.value)

    # db records ---------------------------------------------------------
    def put_db(self, ns: Namespace, version: Version, record: DbRecord) -> None:
        self._put(self.db_path(ns, version), record.to_json())

    def get_db(self, ns: Namespace, version: Version) -> dict[str, Any] | None:
        text = self._get(self.db_path(ns, version))
        return json.loads(text) if text else None

    def delete_db(self, ns: Namespace, version: Version) -> bool:
        return self._delete(self.db_path(ns, version))

    def db_param_arn(self, ns: Namespace, version: Version, region: str, account: str) -> str:
        return f"arn:aws:ssm:{region}:{account}:parameter{self.db_path(ns, version)}"

    # promotion record = lock ------------------------------------------
    def get_promotion(self, ns: Namespace) -> Promotion | None:
        text = self._get(self.promotion_path(ns))
        return Promotion.from_json(text) if text else None

    def create_promotion(self, promotion: Promotion) -> bool:
        """Take the namespace's lock: create the record without overwrite. False when it is held."""
        return self._put(self.promotion_path(promotion.namespace), promotion.to_json(), overwrite=False)

    def save_promotion(self, promotion: Promotion) -> None:
        self._put(self.promotion_path(promotion.namespace), promotion.to_json())

    def release(self, ns: Namespace, promotion_id: str) -> bool:
        """Delete the promotion record, but only if it is still ``promotion_id``'s."""
        current = self.get_promotion(ns)
        if current is None or current.id != promotion_id:
            return False
        return self._delete(self.promotion_path(ns))

    # queue slot -------------------------------------------------------
    def get_queued(self, ns: Namespace) -> QueuedRequest | None:
        text = self._get(self.queued_path(ns))
        return QueuedRequest.from_json(text) if text else None

    def put_queued(self, ns: Namespace, request: QueuedRequest) -> None:
        self._put(self.queued_path(ns), request.to_json())

    def delete_queued(self, ns: Namespace, request_id: str) -> bool:
        current = self.get_queued(ns)
        if current is None or current.id != request_id:
            return False
        return self._delete(self.queued_path(ns))


__all__ = [
    "STAGES",
    "DbRecord",
    "InvalidConfig",
    "Promotion",
    "QueuedRequest",
    "Recorded",
    "StateStore",
    "UnknownTenant",
]
