"""The contract's names: parsing, validation and every name derived from them.

Nothing here talks to AWS. Every name the pipeline builds (stack, instance, snapshot, SSM path, tags)
comes from a parsed :class:`Namespace` and :class:`Version`, never from unchecked input.
"""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from typing import Any, ClassVar

CUSTOMER_RE = r"[a-z][a-z0-9]{1,7}"
PROJECT_RE = r"[0-9]{4}"
ENVIRONMENT_RE = r"[a-z][a-z0-9]{1,9}"
VERSION_RE = r"[0-9]{14}"
VERSION_FORMAT = "%Y%m%d%H%M%S"

# Pattern texts, compiled on first use by re's cache rather than at import (docs/performance.md)
_TENANT = rf"^(?P<customer>{CUSTOMER_RE})-(?P<project>{PROJECT_RE})$"
_ENVIRONMENT = rf"^{ENVIRONMENT_RE}$"
_NAMESPACE = rf"^(?P<tenant>{CUSTOMER_RE}-{PROJECT_RE})-(?P<environment>{ENVIRONMENT_RE})$"
_VERSIONED = rf"^(?P<tenant>{CUSTOMER_RE}-{PROJECT_RE})-(?P<environment>{ENVIRONMENT_RE})-(?P<version>{VERSION_RE})$"
_STACK = rf"^(?P<tenant>{CUSTOMER_RE}-{PROJECT_RE})-(?P<environment>{ENVIRONMENT_RE})-db-(?P<version>{VERSION_RE})$"

MANAGED_TAG = "tierlift:managed"
TENANT_TAG = "tierlift:tenant"
ENVIRONMENT_TAG = "tierlift:environment"
VERSION_TAG = "tierlift:version"
PROMOTION_TAG = "tierlift:promotion"
KIND_TAG = "tierlift:kind"
# An unencrypted source snapshot is copied, encrypted, before the restore: <namespace>-<version>-encrypted
# (RDS snapshot names: letters, digits, single hyphens, at most 255), tagged tierlift:kind=encrypted-copy.
ENCRYPTED_COPY_SUFFIX = "-encrypted"
ENCRYPTED_COPY_KIND = "encrypted-copy"


class InvalidName(ValueError):
    """A name that does not parse under the contract; the message says why."""


class Frozen:
    """What ``@dataclass(frozen=True)`` gave the name types (their ``repr``, equality, hash and
    immutability), written out: a frozen dataclass compiles six methods with ``exec`` when its class is
    defined, ~1.5 ms a class of every cold start (docs/performance.md, "Cold start"). Not a NamedTuple:
    names are formatted into JSON details with ``default=str``, where a tuple would become a list."""

    _parts: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[f] for f in self._parts)

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={self.__dict__[f]!r}" for f in self._parts)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if other.__class__ is self.__class__:
            return self._values() == other._values()  # type: ignore[attr-defined]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


# What a value that is not a string is, in JSON's words (the sender wrote JSON, not Python).
def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "another kind of value"


def _check_str(value: object, what: str) -> str:
    if value is None:
        raise InvalidName(f"{what} is missing")
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string, got {_json_kind(value)}")
    if len(value) > 128:
        raise InvalidName(f"{what} is too long ({len(value)} characters)")
    return value


class Version(Frozen):
    """A source snapshot's UTC creation time, ``YYYYMMDDHHMMSS``. Ordered by its text (time order)."""

    _parts = __match_args__ = ("value",)
    value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "value", value)

    def __lt__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self.value < other.value  # type: ignore[attr-defined]
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self.value <= other.value  # type: ignore[attr-defined]
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self.value > other.value  # type: ignore[attr-defined]
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self.value >= other.value  # type: ignore[attr-defined]
        return NotImplemented

    @classmethod
    def parse(cls, value: object) -> Version:
        text = _check_str(value, "version")
        if not re.fullmatch(VERSION_RE, text):
            raise InvalidName(f"version {text!r} is not YYYYMMDDHHMMSS")
        try:
            datetime.strptime(text, VERSION_FORMAT)
        except ValueError as exc:
            raise InvalidName(f"version {text!r} is not a valid UTC time") from exc
        return cls(text)

    @classmethod
    def from_datetime(cls, when: datetime) -> Version:
        if when.tzinfo is not None:
            when = when.astimezone(UTC)
        return cls(when.strftime(VERSION_FORMAT))

    @property
    def created(self) -> datetime:
        return datetime.strptime(self.value, VERSION_FORMAT).replace(tzinfo=UTC)

    def __str__(self) -> str:
        return self.value


class Tenant(Frozen):
    """``<customer>-<project>``."""

    _parts = __match_args__ = ("customer", "project")
    customer: str
    project: str

    def __init__(self, customer: str, project: str) -> None:
        object.__setattr__(self, "customer", customer)
        object.__setattr__(self, "project", project)

    @classmethod
    def parse(cls, value: object) -> Tenant:
        text = _check_str(value, "tenant")
        match = re.fullmatch(_TENANT, text)
        if not match:
            raise InvalidName(f"tenant {text!r} is not <customer>-<project> (e.g. xy-0146)")
        return cls(match["customer"], match["project"])

    @property
    def name(self) -> str:
        return f"{self.customer}-{self.project}"

    def namespace(self, environment: str) -> Namespace:
        return Namespace(self, parse_environment(environment))

    def __str__(self) -> str:
        return self.name


def parse_environment(value: object) -> str:
    text = _check_str(value, "environment")
    if not re.fullmatch(_ENVIRONMENT, text):
        raise InvalidName(f"environment {text!r} is not 2-10 characters of [a-z][a-z0-9]+")
    return text


class Namespace(Frozen):
    """``<tenant>-<environment>``: one deployment of a tenant's app."""

    _parts = __match_args__ = ("tenant", "environment")
    tenant: Tenant
    environment: str

    def __init__(self, tenant: Tenant, environment: str) -> None:
        object.__setattr__(self, "tenant", tenant)
        object.__setattr__(self, "environment", environment)

    @classmethod
    def parse(cls, value: object) -> Namespace:
        text = _check_str(value, "namespace")
        match = re.fullmatch(_NAMESPACE, text)
        if not match:
            raise InvalidName(f"namespace {text!r} is not <customer>-<project>-<environment>")
        return cls(Tenant.parse(match["tenant"]), match["environment"])

    @property
    def name(self) -> str:
        return f"{self.tenant.name}-{self.environment}"

    def stack_name(self, version: Version) -> str:
        return f"{self.name}-db-{version}"

    def instance_id(self, version: Version) -> str:
        return f"{self.name}-{version}"

    def snapshot_id(self, version: Version) -> str:
        """The source snapshot name, when this namespace is the tenant's source environment."""
        return f"{self.name}-{version}"

    def encrypted_copy_id(self, version: Version) -> str:
        """The encrypted copy of an unencrypted source snapshot, restored into this namespace."""
        return f"{self.name}-{version}{ENCRYPTED_COPY_SUFFIX}"

    def tags(self, version: Version, **extra: str) -> dict[str, str]:
        """The contract's tags for a resource of this namespace and version."""
        tags = {
            MANAGED_TAG: "true",
            TENANT_TAG: self.tenant.name,
            ENVIRONMENT_TAG: self.environment,
            VERSION_TAG: version.value,
            "Customer": self.tenant.customer,
            "Project": self.tenant.project,
            "Environment": self.environment,
        }
        tags.update(extra)
        return tags

    def owns(self, tags: dict[str, str]) -> bool:
        """True when ``tags`` mark a resource the pipeline created for this namespace."""
        return (
            tags.get(MANAGED_TAG) == "true"
            and tags.get(TENANT_TAG) == self.tenant.name
            and tags.get(ENVIRONMENT_TAG) == self.environment
        )

    def __str__(self) -> str:
        return self.name


class Versioned(Frozen):
    """A namespace plus a version: a DB stack, a DB instance or a source snapshot."""

    _parts = __match_args__ = ("namespace", "version")
    namespace: Namespace
    version: Version

    def __init__(self, namespace: Namespace, version: Version) -> None:
        object.__setattr__(self, "namespace", namespace)
        object.__setattr__(self, "version", version)

    @classmethod
    def parse_stack(cls, value: object) -> Versioned:
        text = _check_str(value, "stack name")
        match = re.fullmatch(_STACK, text)
        if not match:
            raise InvalidName(f"stack {text!r} is not <namespace>-db-<version>")
        return cls(Namespace(Tenant.parse(match["tenant"]), match["environment"]), Version.parse(match["version"]))

    @classmethod
    def parse_snapshot(cls, value: object) -> Versioned:
        text = _check_str(value, "snapshot")
        match = re.fullmatch(_VERSIONED, text)
        if not match:
            raise InvalidName(f"snapshot {text!r} is not <tenant>-<environment>-<version>")
        return cls(Namespace(Tenant.parse(match["tenant"]), match["environment"]), Version.parse(match["version"]))

    @classmethod
    def parse_encrypted_copy(cls, value: object) -> Versioned:
        """``<namespace>-<version>-encrypted``: the encrypted copy of a source snapshot for that namespace."""
        text = _check_str(value, "snapshot")
        if not text.endswith(ENCRYPTED_COPY_SUFFIX):
            raise InvalidName(f"snapshot {text!r} is not <namespace>-<version>{ENCRYPTED_COPY_SUFFIX}")
        match = re.fullmatch(_VERSIONED, text[: -len(ENCRYPTED_COPY_SUFFIX)])
        if not match:
            raise InvalidName(f"snapshot {text!r} is not <namespace>-<version>{ENCRYPTED_COPY_SUFFIX}")
        return cls(Namespace(Tenant.parse(match["tenant"]), match["environment"]), Version.parse(match["version"]))

    @property
    def encrypted_copy_id(self) -> str:
        return self.namespace.encrypted_copy_id(self.version)

    @classmethod
    def parse_instance(cls, value: object) -> Versioned:
        text = _check_str(value, "DB instance")
        match = re.fullmatch(_VERSIONED, text)
        if not match:
            raise InvalidName(f"DB instance {text!r} is not <tenant>-<environment>-<version>")
        return cls(Namespace(Tenant.parse(match["tenant"]), match["environment"]), Version.parse(match["version"]))

    @property
    def stack_name(self) -> str:
        return self.namespace.stack_name(self.version)

    @property
    def instance_id(self) -> str:
        return self.namespace.instance_id(self.version)

    @property
    def snapshot_id(self) -> str:
        return self.namespace.snapshot_id(self.version)


def stack_name_from_arn(stack_id: object) -> str:
    """``arn:aws:cloudformation:<region>:<acct>:stack/<name>/<uuid>`` -> ``<name>``."""
    if not isinstance(stack_id, str) or len(stack_id) > 1024 or ":stack/" not in stack_id:
        raise InvalidName(f"stack-id {str(stack_id)[:200]!r} is not a CloudFormation stack ARN")
    return stack_id.split(":stack/", 1)[1].split("/", 1)[0]


def tags_to_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    """AWS ``[{"Key": k, "Value": v}]`` tag lists (CloudFormation, RDS) to a dict."""
    return {t["Key"]: t["Value"] for t in tags or [] if "Key" in t and "Value" in t}


def dict_to_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]
