"""What a handler needs to act: the SSM repository, the AWS adapters, settings and a clock.

Built once per Lambda container (boto3 clients are reused across invocations) and passed explicitly,
so tests and the operator tools can build their own. Each boto3 client is created on its first use:
a handler pays for the services it calls (creating a client loads that service's model, 15-60 ms
each), not for all five.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import boto3

from chalicelib.aws import Bus, Rds, Services, Stacks, client
from chalicelib.settings import Settings
from chalicelib.state import StateStore


class LazyClient:
    """Stands for ``client(service, session)`` and creates it on first attribute access (thread-safe:
    a boto3 session must not create clients from two threads at once)."""

    _lock = threading.Lock()

    def __init__(self, service: str, session: boto3.session.Session) -> None:
        self._service = service
        self._session = session
        self._client: Any = None

    @property
    def created(self) -> bool:
        return self._client is not None

    def _get(self) -> Any:
        if self._client is None:
            with LazyClient._lock:
                if self._client is None:
                    self._client = client(self._service, self._session)
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __repr__(self) -> str:
        return f"LazyClient({self._service!r}, created={self.created})"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    """What a handler works with: the state store, the AWS adapters, the settings and the clock."""

    store: StateStore
    rds: Rds
    stacks: Stacks
    services: Services
    bus: Bus
    settings: Settings
    clock: Callable[[], datetime] = field(default=utcnow)

    @cached_property
    def template(self) -> str:
        return self.settings.template_path.read_text(encoding="utf-8")

    @classmethod
    def from_session(cls, session: boto3.session.Session | None = None, settings: Settings | None = None) -> Deps:
        settings = settings or Settings.from_env()
        session = session or boto3.session.Session()
        return cls(
            store=StateStore(LazyClient("ssm", session), settings.ssm_root),
            rds=Rds(LazyClient("rds", session)),
            stacks=Stacks(LazyClient("cloudformation", session), settings.cfn_role_arn),
            services=Services(LazyClient("ecs", session)),
            bus=Bus(LazyClient("events", session), settings.event_bus),
            settings=settings,
        )


_cached: Deps | None = None


def get_deps() -> Deps:
    """The container-wide :class:`Deps` (created on first use)."""
    global _cached
    if _cached is None:
        _cached = Deps.from_session()
    return _cached


def set_deps(deps: Deps) -> None:
    """Use ``deps`` for every handler from now on (tests, the local cloud's in-process delivery)."""
    global _cached
    _cached = deps


def reset_deps() -> None:
    """Forget the cached clients (tests, and the local cloud after it changes the endpoint)."""
    global _cached
    _cached = None
