"""The promotion's records and an environment's state as one read sees it. Plain data; no AWS.

What SSM holds per target environment (the layout is :mod:`chalicelib.domain.layout`; the adapter is
:mod:`chalicelib.adapters.state`):

* the **state record** (:class:`EnvState`): the active version, the last promotion that ended, the
  versions that completed, the ids of requests recently answered. One record at rest. Each ending
  *creates* the next one (create-only, so it is also the ending's claim) and deletes the one before;
* the **lock** (:class:`Request`): the immutable facts of the promotion in flight, with the target's
  settings as they were when it was requested. Created once (create-only), deleted by its ending;
* the **deploy entries** (:class:`DeployEntry`) of the promotion in flight: awaiting approval, the
  deploy's claim and its completion (the deployment id the ECS events are matched by);
* ``db/<version>``: connection facts of a version's DB (:class:`DbRecord`);
* queue entries (requests waiting for the busy environment) and cancel marks for them.

Nothing is kept once a promotion ended but the state record: history lives in the ledger.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from chalicelib.domain.cells import Cell, cell_of_lock
from chalicelib.domain.config import InvalidConfig, Target, TenantConfig, parse_config, parse_target
from chalicelib.domain.names import Namespace, Tenant, Version
from chalicelib.domain.records import NamedTuple

COMPLETED_KEPT: Final = 20
ANSWERED_KEPT: Final = 64
# The reason of a promotion parked until an RDS DB instance (or its stack's name) is free.
WAITING_FOR_HEADROOM: Final = "waiting for DB instance headroom"
WAITING_FOR_DELETE: Final = "waiting for the stack of the same version to be deleted"
# The reason of a promotion waiting (holding its lock) for the encrypted copy of its source snapshot.
WAITING_FOR_COPY: Final = "waiting for the encrypted copy of the source snapshot"
# Statuses of a snapshot copy that will never become available.
COPY_FAILED: Final = frozenset({"failed", "error", "incompatible-restore"})


class Stage(StrEnum):
    """Where a request or promotion is: one name per stage, from the contract to the logs."""

    QUEUED = "queued"  # waiting in the queue for the busy environment
    REQUESTED = "requested"  # holds the lock, parked: waiting for DB-instance headroom or a stack's delete
    RESTORING = "restoring"  # holds the lock; its DB stack is being created
    AWAITING_APPROVAL = "awaiting_approval"
    DEPLOYING = "deploying"  # the cutover: claimed, then rolling out until ECS reports
    ENDING = "ending"  # the ending is claimed (its outcome says which); the lock goes last


class Outcome(StrEnum):
    """How a request ended: exactly one terminal event each (``events.TERMINAL_EVENT``)."""

    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class UnknownTenant(LookupError):
    """No config parameter for that tenant."""


class StateFull(RuntimeError):
    """The state store refused a new record: its quota is reached (SSM's parameters per account and
    region). Nothing was written by the refused call."""


class Conflict(RuntimeError):
    """Someone else wrote first: the write this invocation read for is no longer possible."""


def answer_key(request_id: str) -> str:
    """A request's key in the ring of answered requests (12 hex digits of its id's SHA-256: 48 bits,
    so that 64 of them fit a standard parameter beside everything else)."""
    return hashlib.sha256(request_id.encode()).hexdigest()[:12]


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None and v != () and v != [] and v != ""}


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(_clean(data), sort_keys=True, separators=(",", ":"))


def _loads(text: str, what: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{what} record is not a JSON object")
    return data


def _pick(kind: Any, data: dict[str, Any], tuples: tuple[str, ...] = ()) -> Any:
    values = {k: v for k, v in data.items() if k in kind._fields}
    for name in tuples:
        if name in values and isinstance(values[name], list):
            values[name] = tuple(values[name])
    return kind(**values)


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------
class Request(NamedTuple):
    """The immutable facts of a request: a queue entry while it waits, the lock's value while it runs.

    The lock also records who took it (``owner``, a Lambda request id, with a lease: a start cut short
    is resumed by a retry of that invocation or, after the lease, by anyone), the target's settings and
    the source snapshot as they were when the promotion started, and the queued requests its start
    answered (``superseded``) or removed as already answered (``folded``).
    """

    id: str
    tenant: str
    environment: str
    version: str | None = None
    previous: str | None = None
    requested_by: str = "unknown"
    image: str | None = None
    requested_at: str = ""
    started: str = ""
    override: str | None = None
    principal: str | None = None  # who signed the request (tierlift's API); None: it came on the bus
    # Set only by the pipeline (a rotated DB secret): roll the service onto the same task definition
    # (fresh tasks read the new secret), under the lock, for the active version; no new DB.
    redeploy: str | None = None
    owner: str = ""
    lease_until: str | None = None
    snapshot: str | None = None
    target: dict[str, Any] | None = None
    superseded: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()
    folded: tuple[str, ...] = ()
    # The source snapshot's engine version, verified offered in the region when the request was checked
    # (the DB stack's EngineVersion; None: the snapshot's own).
    engine_version: str | None = None
    # Set when the source snapshot is not encrypted: the KMS key its copy (``Namespace.encrypted_copy_id``)
    # is encrypted with before the restore, which restores from that copy.
    encrypt_with: str | None = None
    # The tenant's cell as configured when the promotion started (None: the central account): every
    # effect of the promotion happens there, whatever the config says meanwhile.
    cell: dict[str, str] | None = None

    @property
    def cell_settings(self) -> Cell | None:
        return cell_of_lock(self.cell)

    @property
    def answers(self) -> tuple[str, ...]:
        """The queued requests this start answered (superseded or cancelled) or found answered."""
        return (*self.superseded, *self.cancelled, *self.folded)

    @property
    def namespace(self) -> Namespace:
        return Tenant.parse(self.tenant).namespace(self.environment)

    def to_json(self) -> str:
        return dumps(self._asdict())

    @classmethod
    def from_json(cls, text: str) -> Request:
        return _pick(cls, _loads(text, "request"), ("superseded", "cancelled", "folded"))

    def target_settings(self) -> Target:
        """The target as it was configured when the promotion started."""
        if self.target is None:
            raise InvalidConfig(f"promotion {self.id} has no target settings")
        return parse_target(self.environment, self.target, last=False)


class DeployEntry(NamedTuple):
    """One entry of the in-flight promotion's deploy log (``deploy/<promotion id>.<n>``).

    ``awaiting`` marks the request for approval (done at once). ``done`` False marks the deploy's
    *claim*: ``owner`` is carrying out the cutover until ``lease_until``; the owner completes its own
    entry with the task definition and deployment id (no one else writes it). A claim whose owner died is
    taken over by appending the next entry.
    """

    n: int
    at: str
    owner: str = ""
    done: bool = True
    lease_until: str | None = None
    awaiting: bool = False
    expires_at: str | None = None
    by: str | None = None
    stack_id: str | None = None
    task_definition: str | None = None
    previous_task_definition: str | None = None
    deployment_id: str | None = None
    image: str | None = None  # the image the cutover runs (by digest where the registry has one)

    def to_json(self) -> str:
        data = self._asdict()
        data["done"] = self.done  # False must survive _clean
        return json.dumps({k: v for k, v in data.items() if v is not None and v != ""}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeployEntry:
        return _pick(cls, _loads(text, "deploy entry"))


class LastOutcome(NamedTuple):
    """The promotion that ended last in the environment."""

    promotion_id: str
    version: str | None
    outcome: str
    reason: str | None = None
    at: str = ""
    previous: str | None = None
    requested_at: str = ""  # the request's own time: a request older than this one never runs after it


class Completed(NamedTuple):
    """A version that completed in the environment, with the image it ran (a digest where known)."""

    version: str
    image: str | None = None


class EnvState(NamedTuple):
    """The environment's state record (``state/<id of the request it ended>.<attempt>``).

    Created by an ending, create-only: it is that ending's claim (``owner``, ``lease_until``) and the
    environment's new state at once. ``seq`` orders the records: the newest is the state.
    """

    seq: int = 0
    attempt: int = 1
    ended: str = ""  # the request this record ended ("" for the empty state)
    outcome: str = ""
    reason: str | None = None
    at: str = ""
    owner: str = ""
    lease_until: str | None = None
    active: str | None = None
    last: LastOutcome | None = None
    completed: tuple[Completed, ...] = ()
    answered: tuple[str, ...] = ()

    def to_json(self) -> str:
        data = self._asdict()
        data["last"] = self.last._asdict() if self.last else None
        data["completed"] = [[c.version, c.image] if c.image else [c.version] for c in self.completed]
        return dumps(data)

    @classmethod
    def from_json(cls, text: str) -> EnvState:
        data = _loads(text, "state")
        last = data.get("last")
        data["last"] = _pick(LastOutcome, last) if isinstance(last, dict) else None
        data["completed"] = tuple(Completed(*item) for item in data.get("completed", []) if item)
        return _pick(cls, data, ("answered",))

    @property
    def active_version(self) -> Version | None:
        return Version.parse(self.active) if self.active else None

    @property
    def completed_versions(self) -> tuple[str, ...]:
        return tuple(c.version for c in self.completed)

    def image_of(self, version: str) -> str | None:
        return next((c.image for c in reversed(self.completed) if c.version == version), None)

    def has_answered(self, request_id: str) -> bool:
        return answer_key(request_id) in self.answered

    def successor(
        self,
        *,
        ended: str,
        outcome: Outcome,
        reason: str | None,
        at: str,
        owner: str,
        lease_until: str | None,
        active: str | None,
        last: LastOutcome | None,
        completed: Completed | None,
        answered: tuple[str, ...],
        attempt: int = 1,
    ) -> EnvState:
        """The state after an ending: bounded lists, newest last."""
        versions = self.completed
        if completed is not None:
            versions = (*(c for c in versions if c.version != completed.version), completed)
        ring = self.answered
        for request_id in answered:
            key = answer_key(request_id)
            ring = (*(k for k in ring if k != key), key)
        return EnvState(
            seq=self.seq + 1,
            attempt=attempt,
            ended=ended,
            outcome=outcome.value,
            reason=reason,
            at=at,
            owner=owner,
            lease_until=lease_until,
            active=active,
            last=last,
            completed=versions[-COMPLETED_KEPT:],
            answered=ring[-ANSWERED_KEPT:],
        )


class DbRecord(NamedTuple):
    """Connection facts of one version's DB (``db/<version>``)."""

    stack: str
    instance: str
    endpoint: str
    port: int
    snapshot: str
    version: str
    secret_arn: str | None = None
    database: str | None = None

    def to_json(self) -> str:
        return dumps(self._asdict())

    @classmethod
    def from_json(cls, text: str) -> DbRecord:
        return _pick(cls, _loads(text, "db"))


class QueuedRequest(NamedTuple):
    """A request waiting in ``queue/<id>``; ``queued_at`` is when the entry was written (SSM's own time)."""

    request: Request
    queued_at: datetime | None = None

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def version(self) -> str | None:
        return self.request.version

    @property
    def requested_by(self) -> str:
        return self.request.requested_by

    @property
    def requested_at(self) -> str:
        return self.request.requested_at

    @property
    def order(self) -> tuple[str, str]:
        """Newest wins by the request's own time; the same time (raw put-events of one second) in the
        order the entries were queued (docs/contract.md, "Same-second requests")."""
        return (self.request.requested_at, self.queued_at.isoformat() if self.queued_at else "")


# --------------------------------------------------------------------------------------------------
# The promotion in flight, and an environment as read
# --------------------------------------------------------------------------------------------------
@dataclass
class Promotion:
    """The promotion in flight: the lock's facts, its deploy entries and, once claimed, its ending."""

    request: Request
    deploys: tuple[DeployEntry, ...] = ()
    ending: EnvState | None = None
    parked: str | None = None  # why it waits holding the lock (headroom, a stack's delete), if it does

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def tenant(self) -> str:
        return self.request.tenant

    @property
    def environment(self) -> str:
        return self.request.environment

    @property
    def namespace(self) -> Namespace:
        return self.request.namespace

    @property
    def version(self) -> Version:
        assert self.request.version is not None, "a started promotion always has a version"
        return Version.parse(self.request.version)

    @property
    def previous(self) -> Version | None:
        return Version.parse(self.request.previous) if self.request.previous else None

    @property
    def latest(self) -> DeployEntry | None:
        return self.deploys[-1] if self.deploys else None

    @property
    def stage(self) -> Stage:
        if self.ending is not None:
            return Stage.ENDING
        latest = self.latest
        if latest is None:
            return Stage.REQUESTED if self.parked else Stage.RESTORING
        if latest.awaiting:
            return Stage.AWAITING_APPROVAL
        return Stage.DEPLOYING

    @property
    def claim(self) -> DeployEntry | None:
        """The newest deploy entry when it is a claim not yet completed."""
        latest = self.latest
        return latest if latest is not None and not latest.done else None

    @property
    def cut_over(self) -> bool:
        """Has the cutover begun (a deploy was claimed)? From then on ``active`` is this version."""
        return any(not e.awaiting for e in self.deploys)

    def _newest(self, attribute: str) -> Any:
        for entry in reversed(self.deploys):
            value = getattr(entry, attribute)
            if value:
                return value
        return None

    @property
    def stack_id(self) -> str | None:
        return self._newest("stack_id")  # type: ignore[no-any-return]

    @property
    def task_definition(self) -> str | None:
        return self._newest("task_definition")  # type: ignore[no-any-return]

    @property
    def previous_task_definition(self) -> str | None:
        return self._newest("previous_task_definition")  # type: ignore[no-any-return]

    @property
    def deployment_id(self) -> str | None:
        return self._newest("deployment_id")  # type: ignore[no-any-return]

    @property
    def expires_at(self) -> str | None:
        return self._newest("expires_at")  # type: ignore[no-any-return]

    @property
    def approved_by(self) -> str | None:
        return self._newest("by")  # type: ignore[no-any-return]

    @property
    def requested_by(self) -> str:
        return self.request.requested_by

    @property
    def image(self) -> str | None:
        return self.request.image

    @property
    def deployed_image(self) -> str | None:
        """The image the cutover runs, as its claim recorded it (a digest where the registry has one)."""
        return self._newest("image")  # type: ignore[no-any-return]

    @property
    def started(self) -> str:
        return self.request.started

    @property
    def updated(self) -> str:
        """When the promotion last moved (its ending, its newest deploy entry, or its start)."""
        if self.ending is not None:
            return self.ending.at
        latest = self.latest
        return latest.at if latest else self.request.started

    @property
    def reason(self) -> str | None:
        return self.ending.reason if self.ending is not None else self.parked


@dataclass
class EnvRecord:
    """One environment's recorded state as one invocation read it (one listing of its parameters)."""

    namespace: Namespace
    state: EnvState = field(default_factory=EnvState)
    promotion: Promotion | None = None
    queued: list[QueuedRequest] = field(default_factory=list)
    cancels: dict[str, str] = field(default_factory=dict)  # request id -> the cancel's reason
    db: dict[str, DbRecord] = field(default_factory=dict)
    config_text: str | None = None
    config_path: str = ""
    # Keys the record's owner no longer needs: state records older than the newest, deploy entries of
    # promotions no longer in flight (crash leftovers). The next ending deletes them.
    stale: list[str] = field(default_factory=list)
    state_key: str | None = None
    active_since: datetime | None = None
    # A lock taken again for a request that had already ended (a late duplicate that died before giving
    # it back): no promotion is in flight, yet nothing can start until the sweep releases it.
    retaken: Request | None = None

    def config(self) -> TenantConfig:
        """The tenant config; raises :class:`UnknownTenant` or :class:`InvalidConfig`."""
        if self.config_text is None:
            raise UnknownTenant(f"tenant {self.namespace.tenant} has no config at {self.config_path}")
        return parse_config(self.namespace.tenant, self.config_text)

    @property
    def leftovers(self) -> list[str]:
        """Ids of queue entries that no longer wait (running, or answered): anyone may remove them."""
        waiting = {q.id for q in self.waiting}
        return [q.id for q in self.queued if q.id not in waiting]

    @property
    def lock(self) -> Request | None:
        """Whatever holds the lock: the promotion in flight, or a lock taken again after its request ended."""
        return self.promotion.request if self.promotion else self.retaken

    @property
    def active(self) -> Version | None:
        """The active version: the ending's (once claimed), the cutover's, else the state's."""
        promotion = self.promotion
        if promotion is not None and promotion.ending is not None:
            return promotion.ending.active_version
        if promotion is not None and promotion.cut_over:
            return promotion.version
        return self.state.active_version

    @property
    def last(self) -> LastOutcome | None:
        return self.state.last

    @property
    def previous_active(self) -> Version | None:
        """The version that was active before the active one (what a rollback promotes again)."""
        active = self.state.active
        versions = [c.version for c in self.state.completed]
        if active not in versions:
            return None
        index = versions.index(active)
        return Version.parse(versions[index - 1]) if index > 0 else None

    @property
    def completed(self) -> tuple[str, ...]:
        return self.state.completed_versions

    @property
    def waiting(self) -> list[QueuedRequest]:
        """Queue entries still waiting, oldest first (answered or running ones are leftovers)."""
        taken = {self.promotion.id, *self.promotion.request.answers} if self.promotion else set()
        live = [q for q in self.queued if q.id not in taken and not self.state.has_answered(q.id)]
        return sorted(live, key=lambda q: q.order)

    def knows(self, request_id: str) -> str | None:
        """Why a request of that id is not new (in flight, queued, answered), or None."""
        if self.promotion is not None and self.promotion.id == request_id:
            return f"promotion {request_id} is already {self.promotion.stage}"
        if any(q.id == request_id for q in self.queued):
            return f"request {request_id} is already queued"
        if self.state.has_answered(request_id):
            return f"request {request_id} was already answered"
        if self.promotion is not None and request_id in self.promotion.request.answers:
            return f"request {request_id} was already answered"
        return None


__all__ = [
    "ANSWERED_KEPT",
    "COMPLETED_KEPT",
    "COPY_FAILED",
    "WAITING_FOR_COPY",
    "WAITING_FOR_DELETE",
    "WAITING_FOR_HEADROOM",
    "Completed",
    "Conflict",
    "DbRecord",
    "DeployEntry",
    "EnvRecord",
    "EnvState",
    "InvalidConfig",
    "LastOutcome",
    "Outcome",
    "Promotion",
    "QueuedRequest",
    "Request",
    "Stage",
    "StateFull",
    "UnknownTenant",
    "answer_key",
]
