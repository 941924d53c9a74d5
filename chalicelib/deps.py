"""What a handler needs to act: the SSM repository, the AWS adapters, settings and a clock.

Built once per Lambda container (boto3 clients are reused across invocations) and passed explicitly,
so tests and the operator tools can build their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

import boto3

from chalicelib.aws import Bus, Rds, Services, Stacks, client
from chalicelib.settings import Settings
from chalicelib.state import StateStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
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
            store=StateStore(client("ssm", session), settings.ssm_root),
            rds=Rds(client("rds", session)),
            stacks=Stacks(client("cloudformation", session)),
            services=Services(client("ecs", session)),
            bus=Bus(client("events", session), settings.event_bus),
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
