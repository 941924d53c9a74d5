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

from chalicelib.adapters.aws import Bus, Images, Rds, Secrets, Services, Stacks, client
from chalicelib.adapters.scheduler import Schedules
from chalicelib.adapters.ssm import SsmParameters
from chalicelib.adapters.state import StateStore
from chalicelib.domain.ports import BusPort, Databases, ImagePort, SecretPort, ServicePort, StackPort
from chalicelib.settings import Settings


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
    rds: Databases
    stacks: StackPort
    services: ServicePort
    bus: BusPort
    settings: Settings
    clock: Callable[[], datetime] = field(default=utcnow)
    images: ImagePort = field(default_factory=lambda: Images(LazyClient("ecr", boto3.session.Session())))
    session: boto3.session.Session | None = None
    secrets: SecretPort = field(default_factory=lambda: Secrets(LazyClient("secretsmanager", boto3.session.Session())))

    @cached_property
    def schedules(self) -> Schedules | None:
        """The stage's snapshot schedules (None where the deployment has no scheduler role: nothing to sync)."""
        settings = self.settings
        if not settings.scheduler_role_arn or not settings.event_bus_arn:
            return None
        client = LazyClient("scheduler", self.session or boto3.session.Session())
        return Schedules(client, settings.schedule_group, settings.event_bus_arn, settings.scheduler_role_arn)

    @cached_property
    def template(self) -> str:
        return self.settings.template_path.read_text(encoding="utf-8")

    @classmethod
    def from_session(cls, session: boto3.session.Session | None = None, settings: Settings | None = None) -> Deps:
        settings = settings or Settings.from_env()
        session = session or boto3.session.Session()
        return cls(
            store=StateStore(
                SsmParameters(LazyClient("ssm", session), reads_per_second=settings.ssm_reads_per_second),
                settings.ssm_root,
            ),
            rds=Rds(LazyClient("rds", session)),
            stacks=Stacks(LazyClient("cloudformation", session), settings.cfn_role_arn),
            services=Services(LazyClient("ecs", session)),
            bus=Bus(LazyClient("events", session), settings.event_bus),
            settings=settings,
            images=Images(LazyClient("ecr", session)),
            secrets=Secrets(LazyClient("secretsmanager", session)),
            session=session,
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
