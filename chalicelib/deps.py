"""What a handler needs to act: the SSM repository, the AWS adapters, settings and a clock.

Built once per Lambda container (boto3 clients are reused across invocations) and passed explicitly,
so tests and the operator tools can build their own. Each boto3 client is created on its first use:
a handler pays for the services it calls (creating a client loads that service's model, 15-60 ms
each), not for all five.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import ClientError

from chalicelib.adapters.aws import Bus, Images, Rds, Secrets, Services, Stacks, client
from chalicelib.adapters.ssm import SsmParameters
from chalicelib.adapters.state import StateStore
from chalicelib.domain.cells import Cell, CellRefused, session_name
from chalicelib.settings import Settings

if TYPE_CHECKING:  # the ports are types only: Protocol classes cost ~0.1 ms each to define at import
    from chalicelib.adapters.scheduler import Schedules
    from chalicelib.domain.ports import BusPort, Databases, ImagePort, SecretPort, ServicePort, StackPort


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


# STS answers that mean "this role will not be assumed by us" (no such role, a trust policy or external
# id that refuses, a region or account not enabled): the tenant's request ends with the reason. Any
# other error (throttling, 5xx) propagates and Lambda retries.
REFUSED = frozenset(
    {"AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "NoSuchEntity", "RegionDisabledException"}
)


class CellSessions:
    """boto3 sessions in the cells, one per cell role, from ``sts:AssumeRole`` with the deployment's
    external id. A session's credentials refresh themselves (botocore's refreshable credentials, ahead
    of expiry), so a warm container reuses a cell's session and clients across invocations; the first
    assume is made when a tenant of that cell is first reached, so a refusal is known at once."""

    _lock = threading.Lock()

    def __init__(self, central: boto3.session.Session, external_id: str | None) -> None:
        self.central = central
        self.external_id = external_id
        self._sts: Any = None
        self._sessions: dict[tuple[str, str], boto3.session.Session] = {}
        self.bound: dict[tuple[str, str], Deps] = {}

    def _assume(self, cell: Cell, tenant: str) -> dict[str, Any]:
        if self._sts is None:
            self._sts = client("sts", self.central)
        params: dict[str, Any] = {"RoleArn": cell.role_arn, "RoleSessionName": session_name(tenant)}
        if self.external_id:
            params["ExternalId"] = self.external_id
        try:
            answer = self._sts.assume_role(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in REFUSED:
                raise CellRefused(
                    f"cell {cell.account} ({cell.region}) refused tierlift's role {cell.role_arn}: "
                    f"{error.get('Code')}: {error.get('Message', '')}".strip(": ")
                    + " (deploy templates/cell.yaml there with this deployment's external id, docs/deploy.md)"
                ) from None
            raise
        creds = answer["Credentials"]
        expiry = creds["Expiration"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": expiry.isoformat() if isinstance(expiry, datetime) else str(expiry),
        }

    def session(self, cell: Cell, tenant: str) -> boto3.session.Session:
        """A session in ``cell`` as its role (raises :class:`CellRefused` when the role refuses us)."""
        key = (cell.role_arn, cell.region)
        with CellSessions._lock:
            found = self._sessions.get(key)
            if found is not None:
                return found
            credentials = RefreshableCredentials.create_from_metadata(
                metadata=self._assume(cell, tenant),
                refresh_using=lambda: self._assume(cell, tenant),
                method="sts-assume-role",
            )
            core = botocore.session.get_session()
            loader = self.central._session.get_component("data_loader")
            core.register_component("data_loader", loader)
            core._credentials = credentials
            built = boto3.session.Session(botocore_session=core, region_name=cell.region)
            self._sessions[key] = built
            return built


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
    # The cell these adapters reach (None: the central account) and the sessions into the cells.
    cell: Cell | None = None
    cells: CellSessions | None = None

    def in_cell(self, cell: Cell | None, tenant: str = "") -> Deps:
        """These deps with the RDS, CloudFormation, ECS, ECR and Secrets Manager adapters of ``cell``
        (the state store, the bus, the settings and the clock stay central). The same deps when the
        cell is the one they reach already. Raises :class:`CellRefused` when the cell's role refuses."""
        if cell == self.cell:
            return self
        if cell is None:
            return self.cells.bound.get(("central", ""), self) if self.cells is not None else self
        if self.cells is None:
            self.cells = CellSessions(self.session or boto3.session.Session(), self.settings.cell_external_id)
            self.cells.bound[("central", "")] = self
        key = (cell.role_arn, cell.region)
        found = self.cells.bound.get(key)
        if found is not None:
            return found
        session = self.cells.session(cell, tenant)
        bound = replace(
            self,
            rds=Rds(LazyClient("rds", session)),
            stacks=Stacks(LazyClient("cloudformation", session), self.settings.cell_cfn_role(cell)),
            services=Services(LazyClient("ecs", session)),
            images=Images(LazyClient("ecr", session)),
            secrets=Secrets(LazyClient("secretsmanager", session)),
            cell=cell,
        )
        self.cells.bound[key] = bound
        return bound

    @cached_property
    def schedules(self) -> Schedules | None:
        """The stage's snapshot schedules (None where the deployment has no scheduler role: nothing to sync).
        Only the sweep syncs them: its module imports the scheduler adapter at init, no other function does."""
        from chalicelib.adapters.scheduler import Schedules

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
