"""The ports the use cases talk through. Adapters (``chalicelib.adapters``) implement them for AWS; the
in-memory twins (``chalicelib.adapters.memory``, ``tests/fakes.py``) implement them for tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol


class Parameters(Protocol):
    """A parameter store with SSM's semantics: the one atomic write is create-only."""

    def get(self, name: str) -> str | None: ...

    def get_many(self, names: Sequence[str]) -> dict[str, str]: ...

    def list(self, path: str, *, recursive: bool = True) -> dict[str, tuple[str, datetime | None]]: ...

    def create(self, name: str, value: str) -> bool:
        """Write only if the name is free; False when it exists (someone else wrote first)."""
        ...

    def put(self, name: str, value: str) -> None:
        """Write, replacing what is there (only ever by the single owner of that name)."""
        ...

    def delete(self, name: str) -> bool: ...

    def delete_many(self, names: Iterable[str]) -> int: ...


class Databases(Protocol):
    """RDS: source snapshots and DB-instance quota."""

    @property
    def region(self) -> str: ...

    def create_snapshot(self, snapshot_id: str, instance_id: str, tags: dict[str, str]) -> bool: ...

    def describe_snapshot(self, snapshot_id: str) -> dict[str, Any] | None: ...

    def copy_snapshot(self, source_id: str, target_id: str, kms_key_id: str, tags: dict[str, str]) -> bool: ...

    def engine_offered(self, engine: str, version: str) -> bool: ...

    def snapshots(
        self, *, instance_id: str | None = None, snapshot_type: str = "manual"
    ) -> Iterator[dict[str, Any]]: ...

    def delete_snapshot(self, snapshot_id: str) -> bool: ...

    def instances(self) -> Iterator[dict[str, Any]]: ...

    def tag(self, arn: str, tags: dict[str, str]) -> None: ...

    def describe_instance(self, instance_id: str) -> dict[str, Any] | None: ...

    def quotas(self) -> dict[str, tuple[int, int]]: ...


class StackPort(Protocol):
    """CloudFormation: the DB stacks."""

    def create(
        self, name: str, template: str, parameters: dict[str, str], tags: dict[str, str], token: str
    ) -> str | None: ...

    def describe(self, name: str) -> dict[str, Any] | None: ...

    def describe_id(self, stack_id: str) -> dict[str, Any] | None: ...

    def failure_reasons(self, name: str) -> list[str]: ...

    def delete(self, name: str) -> None: ...

    def deleted_names(self) -> set[str]: ...

    def all(self) -> Iterator[dict[str, Any]]: ...


class ServicePort(Protocol):
    """ECS: services and task definitions."""

    def describe_service(self, cluster: str, service: str) -> dict[str, Any] | None: ...

    def describe_task_definition(self, arn: str) -> tuple[dict[str, Any], dict[str, str]]: ...

    def register_keys(self) -> tuple[str, ...]: ...

    def register_task_definition(self, spec: dict[str, Any], tags: dict[str, str]) -> str: ...

    def update_service(
        self, cluster: str, service: str, task_definition: str, *, force: bool = False
    ) -> dict[str, Any]: ...

    def create_service(self, spec: dict[str, Any]) -> dict[str, Any]: ...


class ImagePort(Protocol):
    """The registry: an image reference by digest."""

    def pin(self, image: str) -> str: ...


class SecretPort(Protocol):
    """Secrets Manager: a secret's tags (None when it is gone)."""

    def tags(self, secret_id: str) -> dict[str, str] | None: ...


class BusPort(Protocol):
    """EventBridge: tierlift's own events."""

    def put(self, events: Iterable[Any]) -> list[str]: ...
