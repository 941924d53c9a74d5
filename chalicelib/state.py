"""The SSM repository: the only module that knows the SSM layout of the contract.

Per namespace (``/<root>/<tenant>/<env>/``):

* ``active``: the active version (its parameter history is a promotion log);
* ``db/<version>``: connection facts of that version's DB;
* ``promotion``: the **lock**, the immutable facts of the promotion in flight. Created without
  overwrite, never overwritten while held, deleted only by the holder of that promotion's ending claim;
* ``steps/<promotion id>/<NN>``: the promotion's (or queued request's) **transition log**. Each
  transition creates the next number without overwrite, so of two writers that read the same log only
  one can append: this is the compare-and-set SSM lacks (Cosmic Python's ``version_number``);
* ``queue/<request id>``: a request waiting for a busy environment (create-only; the newest by its own
  request time wins at drain time);
* ``last``: the last ended promotion and its outcome; ``completed``: versions that completed here.
  Both are written only by the holder of an ending claim, which is exclusive.

Across tenants: ``/<root>/services/<cluster>/<service>`` names the namespace an ECS service belongs to.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, NamedTuple

from botocore.exceptions import ClientError

from chalicelib.config import InvalidConfig, TenantConfig, parse_config
from chalicelib.names import InvalidName, Namespace, Tenant, Version

logger = logging.getLogger(__name__)

MAX_STEPS: Final = 99
COMPLETED_KEPT: Final = 50


class Stage(StrEnum):
    """Where a request or promotion is. The first group are in flight, the second are endings."""

    QUEUED = "queued"
    REQUESTED = "requested"
    RESTORING = "restoring"
    AWAITING_APPROVAL = "awaiting_approval"
    DEPLOYING = "deploying"
    ENDING = "ending"  # in a log: the ending claim (its ``outcome`` says which); never a promotion's stage
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Outcome(StrEnum):
    """How a request ended: exactly one terminal event each."""

    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


STAGES = tuple(Stage)
ENDING_STAGES = {
    Outcome.COMPLETED: Stage.FINALIZING,
    Outcome.FAILED: Stage.FAILED,
    Outcome.ROLLED_BACK: Stage.ROLLED_BACK,
    Outcome.CANCELLED: Stage.CANCELLED,
    Outcome.REJECTED: Stage.REJECTED,
}


def to_json(record: Request | Step | LastOutcome | DbRecord) -> str:
    """The record as its parameter's value (None fields left out)."""
    return json.dumps({k: v for k, v in record._asdict().items() if v is not None}, sort_keys=True)


def from_json[R: (Request, Step, LastOutcome, DbRecord)](kind: type[R], text: str) -> R:
    """A record read back from its parameter; unknown keys (written by a newer version) are dropped."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{kind.__name__} record is not a JSON object")
    return kind(**{k: v for k, v in data.items() if k in kind._fields})


class Request(NamedTuple):
    """The immutable facts of a request: the lock's value while it runs, a queue entry while it waits."""

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

    @property
    def namespace(self) -> Namespace:
        return Tenant.parse(self.tenant).namespace(self.environment)


class Step(NamedTuple):
    """One entry of a transition log (``steps/<id>/<NN>``).

    ``done`` False marks a *claim*: ``owner`` (a Lambda request id) is carrying out the work of entering
    ``stage`` until ``lease_until``. A claim is completed by its owner overwriting its own entry (no one
    else ever writes that parameter) or taken over by appending a new entry.
    """

    seq: int
    stage: str
    at: str
    owner: str = ""
    done: bool = True
    lease_until: str | None = None
    outcome: str | None = None
    reason: str | None = None
    stack_id: str | None = None
    task_definition: str | None = None
    previous_task_definition: str | None = None
    deployment_id: str | None = None
    by: str | None = None
    expires_at: str | None = None

    @property
    def stage_(self) -> Stage:
        return Stage(self.stage)


class Log(NamedTuple):
    """A request's transition log, oldest first."""

    id: str
    steps: tuple[Step, ...] = ()

    @property
    def latest(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def next_seq(self) -> int:
        return (self.latest.seq if self.latest else 0) + 1

    def last_with(self, attribute: str) -> Any:
        """The newest non-empty value of a step attribute (task definition, deployment id, stack id...)."""
        for step in reversed(self.steps):
            value = getattr(step, attribute)
            if value:
                return value
        return None

    def reached(self, stage: Stage) -> bool:
        return any(s.stage == stage and s.done for s in self.steps)


@dataclass
class Promotion:
    """The promotion in flight, as read: the lock's facts plus its transition log (not stored as such)."""

    request: Request
    log: Log

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
    def stage(self) -> Stage:
        """The stage: the log's newest step; an ending in progress shows as its outcome's stage."""
        latest = self.log.latest
        if latest is None:
            return Stage.REQUESTED
        if latest.stage == Stage.ENDING:
            return ENDING_STAGES[Outcome(latest.outcome or Outcome.FAILED)]
        return latest.stage_

    @property
    def claim(self) -> Step | None:
        """The latest step when it is a claim not yet completed."""
        latest = self.log.latest
        return latest if latest is not None and not latest.done else None

    @property
    def ending(self) -> Step | None:
        """The (first) ending claim, which fixes the outcome."""
        return next((s for s in self.log.steps if s.stage == Stage.ENDING), None)

    @property
    def stack_id(self) -> str | None:
        return self.log.last_with("stack_id")  # type: ignore[no-any-return]

    @property
    def task_definition(self) -> str | None:
        return self.log.last_with("task_definition")  # type: ignore[no-any-return]

    @property
    def previous_task_definition(self) -> str | None:
        return self.log.last_with("previous_task_definition")  # type: ignore[no-any-return]

    @property
    def deployment_id(self) -> str | None:
        return self.log.last_with("deployment_id")  # type: ignore[no-any-return]

    @property
    def requested_by(self) -> str:
        return self.request.requested_by

    @property
    def image(self) -> str | None:
        return self.request.image

    @property
    def started(self) -> str:
        return self.request.started

    @property
    def updated(self) -> str:
        """When the promotion last moved (its latest step, or its start)."""
        latest = self.log.latest
        return latest.at if latest else self.request.started

    @property
    def reason(self) -> str | None:
        return self.log.last_with("reason")  # type: ignore[no-any-return]


class QueuedRequest(NamedTuple):
    """A request waiting in ``queue/<id>``, with its log (to tell a live entry from a disposed one)."""

    request: Request
    log: Log

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
    def waiting(self) -> bool:
        """Still waiting: its log's latest step is ``queued`` (or, before that step exists, empty)."""
        latest = self.log.latest
        return latest is None or (latest.stage == Stage.QUEUED and latest.done)

    def newer_than(self, other: QueuedRequest | Request) -> bool:
        mine = (self.request.requested_at, self.request.id)
        theirs = (
            (other.request.requested_at, other.request.id)
            if isinstance(other, QueuedRequest)
            else (other.requested_at, other.id)
        )
        return mine > theirs


class LastOutcome(NamedTuple):
    """``last``: the promotion that ended last in the namespace."""

    promotion_id: str
    version: str | None
    outcome: str
    reason: str | None = None
    at: str = ""
    previous: str | None = None
    requested_at: str = ""  # the request's own time: a request older than this one never runs after it


class DbRecord(NamedTuple):
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


class Conflict(RuntimeError):
    """Someone else appended to the log first (the write this invocation read for is no longer possible)."""


@dataclass
class Recorded:
    """A namespace's recorded state as one invocation read it."""

    namespace: Namespace
    config_text: str | None
    config_path: str
    active: Version | None
    promotion: Promotion | None
    queued: list[QueuedRequest] = field(default_factory=list)
    last: LastOutcome | None = None
    completed: tuple[str, ...] = ()
    active_since: datetime | None = None
    db: dict[str, DbRecord] = field(default_factory=dict)
    lock: Request | None = None

    def config(self) -> TenantConfig:
        """The tenant config; raises :class:`UnknownTenant` or :class:`InvalidConfig`."""
        if self.config_text is None:
            raise UnknownTenant(f"tenant {self.namespace.tenant} has no config at {self.config_path}")
        return parse_config(self.namespace.tenant, self.config_text)

    @property
    def waiting(self) -> list[QueuedRequest]:
        """Queue entries still waiting, oldest request first."""
        return sorted((q for q in self.queued if q.waiting), key=lambda q: (q.requested_at, q.id))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _steps(values: dict[str, str], prefix: str) -> tuple[Step, ...]:
    """The steps among ``values`` whose names are ``<prefix>/<NN>``, in order."""
    out: list[Step] = []
    for name, value in values.items():
        if not name.startswith(prefix + "/"):
            continue
        leaf = name[len(prefix) + 1 :]
        if leaf.isdigit():
            out.append(from_json(Step, value))
    return tuple(sorted(out, key=lambda s: s.seq))


class StateStore:
    """SSM Parameter Store under the contract's layout."""

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

    def steps_path(self, ns: Namespace, request_id: str) -> str:
        return f"{self.env_path(ns)}/steps/{request_id}"

    def step_path(self, ns: Namespace, request_id: str, seq: int) -> str:
        return f"{self.steps_path(ns, request_id)}/{seq:02d}"

    def queue_path(self, ns: Namespace) -> str:
        return f"{self.env_path(ns)}/queue"

    def queue_entry_path(self, ns: Namespace, request_id: str) -> str:
        return f"{self.queue_path(ns)}/{request_id}"

    def last_path(self, ns: Namespace) -> str:
        return f"{self.env_path(ns)}/last"

    def completed_path(self, ns: Namespace) -> str:
        return f"{self.env_path(ns)}/completed"

    def service_path(self, cluster: str, service: str) -> str:
        return f"{self.root}/services/{cluster}/{service}"

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

    def delete_many(self, names: Iterable[str]) -> int:
        """Delete parameters in batches of 10 (``DeleteParameters``); returns how many were deleted."""
        pending = list(names)
        deleted = 0
        for start in range(0, len(pending), 10):
            found = self._ssm.delete_parameters(Names=pending[start : start + 10])
            deleted += len(found.get("DeletedParameters", []))
        return deleted

    def get_by_path(self, path: str, *, recursive: bool = True) -> dict[str, str]:
        """Every parameter below ``path`` (paginated): name -> value."""
        return {name: value for name, (value, _) in self.get_by_path_dated(path, recursive=recursive).items()}

    def get_by_path_dated(self, path: str, *, recursive: bool = True) -> dict[str, tuple[str, datetime | None]]:
        """Every parameter below ``path``: name -> (value, last modified)."""
        values: dict[str, tuple[str, datetime | None]] = {}
        paginator = self._ssm.get_paginator("get_parameters_by_path")
        for page in paginator.paginate(Path=path, Recursive=recursive):
            for param in page.get("Parameters", []):
                values[param["Name"]] = (param["Value"], param.get("LastModifiedDate"))
        return values

    # reading a namespace ---------------------------------------------
    def recorded(self, ns: Namespace, *, with_queue: bool = True) -> Recorded:
        """Config, ``active``, the lock with its log, ``last``, ``completed`` (one call) and the queue (one more).

        ``with_queue=False`` skips the queue's read where the caller does not need it.
        """
        names = [
            self.config_path(ns.tenant),
            self.active_path(ns),
            self.promotion_path(ns),
            self.last_path(ns),
            self.completed_path(ns),
        ]
        found = self._ssm.get_parameters(Names=names).get("Parameters", [])
        values = {p["Name"]: str(p["Value"]) for p in found}
        dates = {p["Name"]: p.get("LastModifiedDate") for p in found}
        lock_text = values.get(names[2])
        lock = from_json(Request, lock_text) if lock_text else None
        promotion = Promotion(lock, self.read_log(ns, lock.id)) if lock else None
        queued = self.read_queue(ns) if with_queue else []
        active = values.get(names[1])
        last = values.get(names[3])
        completed = values.get(names[4])
        return Recorded(
            namespace=ns,
            config_text=values.get(names[0]),
            config_path=names[0],
            active=Version.parse(active) if active is not None else None,
            promotion=promotion,
            queued=queued,
            last=from_json(LastOutcome, last) if last else None,
            completed=tuple(json.loads(completed)) if completed else (),
            active_since=dates.get(names[1]),
            lock=lock,
        )

    def read_log(self, ns: Namespace, request_id: str) -> Log:
        prefix = self.steps_path(ns, request_id)
        return Log(request_id, _steps(self.get_by_path(prefix, recursive=False), prefix))

    def read_queue(self, ns: Namespace) -> list[QueuedRequest]:
        """Every queue entry with its log (a waiting entry's log is one ``queued`` step: cheap to read)."""
        entries = self.get_by_path(self.queue_path(ns), recursive=False)
        out = []
        for text in entries.values():
            request = from_json(Request, text)
            out.append(QueuedRequest(request, self.read_log(ns, request.id)))
        return out

    def all_recorded(self) -> list[Recorded]:
        """Every namespace's state from one paginated walk of the root (status of everything)."""
        return parse_tree(self.root, self.get_by_path_dated(self.root))

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

    def set_active(self, ns: Namespace, version: Version | None, *, was: Version | None) -> None:
        """Set ``active`` to ``version`` (delete it for None); no write when it already holds that.

        Only the holder of the namespace's deploy or ending claim calls this, so the write is exclusive.
        """
        if was == version:
            return
        if version is None:
            self._delete(self.active_path(ns))
            return
        self._put(self.active_path(ns), version.value)

    # db records ---------------------------------------------------------
    def put_db(self, ns: Namespace, version: Version, record: DbRecord) -> None:
        self._put(self.db_path(ns, version), to_json(record))

    def get_db(self, ns: Namespace, version: Version) -> dict[str, Any] | None:
        text = self._get(self.db_path(ns, version))
        return json.loads(text) if text else None

    def delete_db(self, ns: Namespace, version: Version) -> bool:
        return self._delete(self.db_path(ns, version))

    def db_param_arn(self, ns: Namespace, version: Version, region: str, account: str) -> str:
        return f"arn:aws:ssm:{region}:{account}:parameter{self.db_path(ns, version)}"

    # the lock ----------------------------------------------------------
    def get_promotion(self, ns: Namespace) -> Promotion | None:
        text = self._get(self.promotion_path(ns))
        if not text:
            return None
        lock = from_json(Request, text)
        return Promotion(lock, self.read_log(ns, lock.id))

    def take_lock(self, request: Request) -> bool:
        """Take the namespace's lock for ``request`` (create without overwrite). False when it is held."""
        return self._put(self.promotion_path(request.namespace), to_json(request), overwrite=False)

    def release_lock(self, ns: Namespace) -> None:
        """Delete the lock. Only the holder of the in-flight promotion's ending claim may call this."""
        self._delete(self.promotion_path(ns))

    # transition logs ----------------------------------------------------
    def append(self, ns: Namespace, log: Log, step: Step) -> Step:
        """Append ``step`` as the log's next entry, conditional on the log being as read; else :class:`Conflict`."""
        seq = log.next_seq
        if seq > MAX_STEPS:
            raise Conflict(f"log of {log.id} is full")
        step = step._replace(seq=seq)
        if not self._put(self.step_path(ns, log.id, seq), to_json(step), overwrite=False):
            raise Conflict(f"step {seq} of {log.id} was written by someone else")
        return step

    def complete(self, ns: Namespace, log_id: str, step: Step) -> Step:
        """The owner of a claim completes it (overwrites its own entry: no one else writes it)."""
        done = step._replace(done=True, lease_until=None)
        self._put(self.step_path(ns, log_id, step.seq), to_json(done))
        return done

    def delete_log(self, ns: Namespace, log: Log) -> None:
        self.delete_many(self.step_path(ns, log.id, s.seq) for s in log.steps)

    # queue ----------------------------------------------------------------
    def put_queue_entry(self, ns: Namespace, request: Request) -> bool:
        return self._put(self.queue_entry_path(ns, request.id), to_json(request), overwrite=False)

    def delete_queue_entry(self, ns: Namespace, request_id: str) -> None:
        self._delete(self.queue_entry_path(ns, request_id))

    # endings ----------------------------------------------------------
    def put_last(self, ns: Namespace, last: LastOutcome) -> None:
        self._put(self.last_path(ns), to_json(last))

    def completed_versions(self, ns: Namespace) -> tuple[str, ...]:
        text = self._get(self.completed_path(ns))
        return tuple(json.loads(text)) if text else ()

    def put_completed(self, ns: Namespace, completed: tuple[str, ...], version: Version) -> None:
        if version.value in completed:
            return
        kept = (*completed, version.value)[-COMPLETED_KEPT:]
        self._put(self.completed_path(ns), json.dumps(list(kept)))

    # scheduled snapshots ------------------------------------------------
    def schedule_path(self, tenant: Tenant, due: Version) -> str:
        return f"{self.root}/schedule/{tenant.name}/{due}"

    def mark_scheduled_snapshot(self, tenant: Tenant, due: Version) -> bool:
        """Claim the tenant's scheduled snapshot due at ``due`` (create-only): False when already taken."""
        return self._put(self.schedule_path(tenant, due), due.value, overwrite=False)

    # waiting for DB-instance headroom --------------------------------------------
    def headroom_path(self) -> str:
        return f"{self.root}/headroom"

    def headroom_entry(self, requested_at: str, ns: Namespace) -> str:
        """``/<root>/headroom/<YYYYMMDDHHMMSS>-<namespace>``: sorted by name is sorted by request time."""
        digits = "".join(c for c in requested_at if c.isdigit())[:14].ljust(14, "0")
        return f"{self.headroom_path()}/{digits}-{ns.name}"

    def headroom_waiting(self) -> list[tuple[str, Namespace, str]]:
        """The promotions waiting for headroom, oldest first: (entry, namespace, promotion id)."""
        out = []
        for name, value in sorted(self.get_by_path(self.headroom_path(), recursive=False).items()):
            try:
                out.append((name, Namespace.parse(name.rsplit("/", 1)[1][15:]), value))
            except InvalidName:
                logger.error("unreadable headroom entry %s", name)
        return out

    def put_headroom(self, entry: str, promotion_id: str) -> bool:
        return self._put(entry, promotion_id, overwrite=False)

    def delete_headroom(self, entry: str) -> None:
        self._delete(entry)

    # services index -------------------------------------------------------
    def namespace_of_service(self, cluster: str, service: str) -> Namespace | None:
        text = self._get(self.service_path(cluster, service))
        try:
            return Namespace.parse(text) if text else None
        except InvalidName:
            return None

    def index_service(self, cluster: str, service: str, ns: Namespace) -> None:
        """Record which namespace a service belongs to (create-only; the same value every time)."""
        self._put(self.service_path(cluster, service), ns.name, overwrite=False)


def parse_tree(root: str, params: dict[str, tuple[str, datetime | None]]) -> list[Recorded]:
    """Every namespace's :class:`Recorded` from one walk of the root (the sweep and ``status``).

    Unreadable parameters raise ``ValueError``/``InvalidName``; the sweep's wrapper reports them.
    """
    root = root.rstrip("/")
    configs: dict[str, tuple[str, str]] = {}
    by_ns: dict[str, dict[str, tuple[str, datetime | None]]] = {}
    for name, value in params.items():
        if not name.startswith(root + "/"):
            continue
        parts = name[len(root) + 1 :].split("/")
        if parts[0] in ("services", "schedule", "headroom") or len(parts) < 2:
            continue
        if parts[1:] == ["config"]:
            configs[parts[0]] = (name, value[0])
            continue
        by_ns.setdefault("/".join(parts[:2]), {})[name] = value
    out: list[Recorded] = []
    namespaces = set(by_ns)
    for tenant_name, (_, text) in configs.items():
        try:
            config = parse_config(Tenant.parse(tenant_name), text)
        except (InvalidName, InvalidConfig):
            continue
        namespaces.update(f"{tenant_name}/{env}" for env in config.environments)
    for key in sorted(namespaces):
        tenant_name, env = key.split("/", 1)
        try:
            ns = Tenant.parse(tenant_name).namespace(env)
        except InvalidName:
            continue
        out.append(recorded_from(root, ns, configs.get(tenant_name), by_ns.get(key, {})))
    return out


def recorded_from(
    root: str, ns: Namespace, config: tuple[str, str] | None, params: dict[str, tuple[str, datetime | None]]
) -> Recorded:
    base = f"{root}/{ns.tenant.name}/{ns.environment}"
    values = {k: v for k, (v, _) in params.items()}
    active = values.get(f"{base}/active")
    lock_text = values.get(f"{base}/promotion")
    lock = from_json(Request, lock_text) if lock_text else None
    last = values.get(f"{base}/last")
    completed = values.get(f"{base}/completed")
    db: dict[str, DbRecord] = {}
    queued: list[QueuedRequest] = []
    for name, value in values.items():
        if name.startswith(f"{base}/db/"):
            version = Version.parse(name.rsplit("/", 1)[1])
            try:
                db[version.value] = from_json(DbRecord, value)
            except (TypeError, ValueError):
                db[version.value] = DbRecord("", "", "", 0, "", version.value)
        elif name.startswith(f"{base}/queue/"):
            request = from_json(Request, value)
            queued.append(QueuedRequest(request, Log(request.id, _steps(values, f"{base}/steps/{request.id}"))))
    return Recorded(
        namespace=ns,
        config_text=config[1] if config else None,
        config_path=f"{root}/{ns.tenant.name}/config",
        active=Version.parse(active) if active is not None else None,
        promotion=Promotion(lock, Log(lock.id, _steps(values, f"{base}/steps/{lock.id}"))) if lock else None,
        queued=queued,
        last=from_json(LastOutcome, last) if last else None,
        completed=tuple(json.loads(completed)) if completed else (),
        active_since=params.get(f"{base}/active", ("", None))[1],
        db=db,
        lock=lock,
    )


def ended_logs(root: str, ns: Namespace, params: dict[str, str], keep: set[str]) -> dict[str, Log]:
    """Transition logs of requests no longer in flight or queued (the sweep removes them after retention)."""
    base = f"{root}/{ns.tenant.name}/{ns.environment}/steps/"
    ids = {name[len(base) :].split("/", 1)[0] for name in params if name.startswith(base)}
    return {i: Log(i, _steps(params, base + i)) for i in sorted(ids - keep)}


__all__ = [
    "STAGES",
    "Conflict",
    "DbRecord",
    "InvalidConfig",
    "LastOutcome",
    "Log",
    "Outcome",
    "Promotion",
    "QueuedRequest",
    "Recorded",
    "Request",
    "Stage",
    "StateStore",
    "Step",
    "UnknownTenant",
    "from_json",
    "to_json",
]
