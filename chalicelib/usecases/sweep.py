"""The scheduled sweep: orphaned DB stacks, stuck promotions, snapshot retention, quota headroom.

One code path for the Chalice schedule (:func:`on_schedule`) and the operator CLI (:func:`run_sweep`):

1. **gather** everything in bulk: one recursive ``get_parameters_by_path`` walk of the SSM root (each
   environment parsed by the store's own parser: state record, lock, deploy entries, ``db/``, queue,
   cancel marks), the waiting list, paginated ``describe_stacks`` and ``describe_db_snapshots`` (tags
   come with both);
2. **plan** with the pure :func:`chalicelib.domain.sweep_plan.plan`;
3. **observe** each stuck promotion (the only per-namespace describes, and only when something is
   stuck) and call the same use case the lost event's handler would have called
   (:mod:`~chalicelib.usecases.stack_status`, :mod:`~chalicelib.usecases.deployment_state`,
   :mod:`~chalicelib.usecases.endings`, :mod:`~chalicelib.usecases.requests`);
4. **carry out** the plan through the adapters and those use cases, each of which re-reads the
   environment and re-checks its own safety rules (defence in depth). A dry run stops before this step.

Every action, refusal and report lands in one :class:`SweepResult`, logged as one structured record.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

import chalicelib.adapters.scheduler  # noqa: F401 (deps.schedules builds one: imported with the sweep, at its init)
from chalicelib.adapters.aws import PutEventsFailed, Stacks
from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.cells import Cell, CellRefused, cell_key
from chalicelib.domain.config import InvalidConfig
from chalicelib.domain.decisions import CREATE_FAILED_STATES, CREATE_OK, CREATE_PENDING_STATES, ClaimVerdict
from chalicelib.domain.ecs_spec import PromotionError
from chalicelib.domain.events import OutboundEvent
from chalicelib.domain.model import EnvRecord, Outcome, Promotion, Stage, UnknownTenant
from chalicelib.domain.names import PROMOTION_TAG, InvalidName, Namespace, Tenant, Version, Versioned
from chalicelib.domain.sweep_plan import (
    DELETE_DB_RECORD,
    DELETE_LEFTOVERS,
    DELETE_SNAPSHOT,
    DELETE_STACK,
    DRAIN_QUEUE,
    RECONCILE,
    REPORT,
    REQUEST_PROMOTION,
    SKIP,
    SWEEP_REQUESTED_TAG,
    Facts,
    NamespaceState,
    Plan,
    Planned,
    SnapshotFact,
    StackFact,
    TenantState,
    counts,
    leftovers_of,
    lost_snapshot_requests,
    mark_parked,
    parse_parameters,
    plan,
    snapshot_tag_value,
    source_snapshot_of,
)
from chalicelib.observability import metrics
from chalicelib.usecases.cells import of_config, of_promotion
from chalicelib.usecases.deployment_state import NotYet, apply_deployment_outcome
from chalicelib.usecases.endings import delete_stack, end
from chalicelib.usecases.requests import drain, drain_after, release_retaken, run_locked
from chalicelib.usecases.schedules import reconcile as reconcile_schedules
from chalicelib.usecases.snapshots import resume_after_copy
from chalicelib.usecases.stack_status import admit_waiting, apply_stack_status
from chalicelib.usecases.transitions import Result, ignore, lock_verdict

logger = logging.getLogger(__name__)

QUOTAS = ("DBInstances", "ManualSnapshots")
LOG_ACTIONS_LIMIT = 100
# Order of execution: settle stuck promotions first (they may end, moving versions and locks), then
# delete, then request promotions for lost snapshot events.
ORDER = (RECONCILE, DRAIN_QUEUE, DELETE_STACK, DELETE_DB_RECORD, DELETE_SNAPSHOT, REQUEST_PROMOTION, DELETE_LEFTOVERS)


@dataclass
class Entry:
    """One planned item and what became of it: ``planned`` (dry run), ``done``, ``refused``, ``error``."""

    item: Planned
    status: str = "planned"
    outcome: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = self.item.as_dict()
        data["status"] = self.status
        if self.outcome:
            data["outcome"] = self.outcome
        return data


@dataclass
class SweepResult:
    """What one sweep saw, planned and did. :meth:`as_dict` is JSON-serialisable."""

    run_id: str
    dry_run: bool
    tenant: str | None
    started: str
    namespaces: int = 0
    stacks: int = 0
    snapshots: int = 0
    entries: list[Entry] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    headroom: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    admitted: int = 0  # parked promotions the admission pass started
    seconds: float = 0.0
    # Wall time of each phase: gather (bulk reads), plan (pure), act (observe, reconcile, delete).
    timings: dict[str, float] = field(default_factory=dict)
    schedules: dict[str, int] = field(default_factory=dict)

    def by_kind(self, kind: str, status: str | None = None) -> list[Entry]:
        return [e for e in self.entries if e.item.kind == kind and (status is None or e.status == status)]

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return counts([e.item for e in self.entries], Counter(self.kept))

    @property
    def status_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.entries:
            out[entry.status] = out.get(entry.status, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": "dry_run" if self.dry_run else "sweep",
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "tenant": self.tenant,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "schedules": self.schedules,
            "namespaces": self.namespaces,
            "stacks": self.stacks,
            "snapshots": self.snapshots,
            "counts": self.counts,
            "statuses": self.status_counts,
            "headroom": self.headroom,
            "admitted": self.admitted,
            "errors": list(self.errors),
            "actions": [e.as_dict() for e in self.entries],
        }

    def as_log(self) -> dict[str, Any]:
        """The one structured log record: :meth:`as_dict` with the action list capped."""
        data = self.as_dict()
        if len(data["actions"]) > LOG_ACTIONS_LIMIT:
            data["actions_total"] = len(data["actions"])
            data["actions"] = data["actions"][:LOG_ACTIONS_LIMIT]
        return data


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------
def on_schedule(deps: Deps, event: Any) -> SweepResult:
    """The schedule's use case: sweep everything (the scheduled event carries nothing else)."""
    return run_sweep(deps)


def run_sweep(deps: Deps, tenant: str | None = None, *, dry_run: bool = False) -> SweepResult:
    """Sweep every tenant (or one): gather, plan, reconcile and delete (or, with ``dry_run``, only say so)."""
    started = time.monotonic()
    if tenant is not None:
        tenant = Tenant.parse(tenant).name
    result = SweepResult(
        run_id=f"sweep-{uuid.uuid4()}",
        dry_run=dry_run,
        tenant=tenant,
        started=deps.clock().isoformat(timespec="seconds"),
    )
    facts = gather(deps, tenant)
    if lost_snapshot_requests(facts, deps.settings, frozenset()):
        # Only when a snapshot looks unpromoted: recently deleted stacks prove a request was made.
        facts.deleted_stacks = deleted_stack_names(deps)
    gathered = time.monotonic()
    the_plan = plan(facts, deps.settings)
    planned = time.monotonic()
    result.namespaces = len(facts.namespaces)
    result.stacks = len(facts.stacks)
    result.snapshots = len(facts.snapshots)
    result.kept = dict(the_plan.kept)
    result.entries = [Entry(item, _initial_status(item)) for item in _ordered(the_plan)]
    if not dry_run:
        _count_stuck(result)
    result.headroom = headroom(deps)
    cells = cells_of(facts.tenants)
    if cells:
        result.headroom["cells"] = {key: _cell_headroom(deps, cell) for key, cell in sorted(cells.items())}
    for entry in result.entries:
        if entry.item.kind == RECONCILE:
            _safely(result, entry, lambda e: _reconcile(deps, facts, e, dry_run=dry_run))
        elif not dry_run and entry.item.kind in ORDER:
            _safely(result, entry, lambda e: _execute(_in_cell_of(deps, facts, e), facts, e))
    if not dry_run and tenant is None and deps.schedules is not None:
        # The snapshot schedules (EventBridge Scheduler) as the configs want them: one listing.
        configs = {name: t.config for name, t in facts.tenants.items() if t.config is not None}
        try:
            result.schedules = reconcile_schedules(deps.schedules, configs)
        except (BotoCoreError, ClientError) as exc:
            result.errors.append(f"snapshot schedules: {exc}"[:300])
    if not dry_run:
        _put_events(deps, result)
        if facts.parked:
            # Promotions wait for headroom or a stack's delete: admit those whose DELETE_COMPLETE was lost.
            _admit_parked(deps, result)
    done = time.monotonic()
    result.seconds = done - started
    result.timings = {"gather": gathered - started, "plan": planned - gathered, "act": done - planned}
    return result


def _count_stuck(result: SweepResult) -> None:
    """``PromotionsStuck``: each promotion this sweep found stuck past its stage's timeout (the plan's
    ``reconcile`` entries ``stuck_<stage>``), per environment; the tenant is the EMF line's property."""
    for entry in result.entries:
        item = entry.item
        if item.kind == RECONCILE and item.reason.startswith("stuck_") and item.tenant and item.environment:
            metrics.promotion_stuck(item.tenant, item.environment)


def _in_cell_of(deps: Deps, facts: Facts, entry: Entry) -> Deps:
    """The deps of the cell of the entry's tenant (its config's; the central account when it has none)."""
    state = facts.tenants.get(entry.item.tenant or "")
    config = state.config if state is not None else None
    return of_config(deps, config) if config is not None else deps


def _cell_headroom(deps: Deps, cell: Cell) -> dict[str, Any]:
    """A cell's DB-instance and snapshot headroom (its own account's quotas)."""
    try:
        return headroom(deps.in_cell(cell, "sweep"))
    except CellRefused as exc:
        return {"status": "unknown", "reason": str(exc)[:300]}


def _initial_status(item: Planned) -> str:
    initial: dict[str, str] = {SKIP: "skipped", REPORT: "reported"}
    return initial.get(item.kind, "planned")


def _ordered(the_plan: Plan) -> list[Planned]:
    rank: dict[str, int] = {kind: i for i, kind in enumerate(ORDER)}
    return sorted(the_plan.items, key=lambda p: rank.get(p.kind, len(ORDER)))


def _safely(result: SweepResult, entry: Entry, step: Any) -> None:
    """Run one action; an AWS error fails that action only, never the rest of the sweep."""
    try:
        step(entry)
    except (
        ClientError,
        BotoCoreError,
        PutEventsFailed,
        PromotionError,
        NotYet,
        InvalidName,
        InvalidConfig,
        UnknownTenant,
        CellRefused,
        KeyError,
        ValueError,
    ) as exc:
        entry.status = "error"
        entry.outcome = f"{type(exc).__name__}: {exc}"[:500]
        result.errors.append(f"{entry.item.kind} {entry.item.target}: {entry.outcome}")
        logger.exception("sweep action failed: %s %s", entry.item.kind, entry.item.target)


# --------------------------------------------------------------------------------------------------
# Gathering (bulk reads only)
# --------------------------------------------------------------------------------------------------
def gather(deps: Deps, tenant: str | None = None) -> Facts:
    """Read the world in bulk: SSM under the root (or the tenant), all stacks, all manual snapshots.

    The three listings are independent reads of three services with quotas of their own, so the
    stacks and the snapshots are listed on two worker threads while this thread walks SSM (paced to the
    sweep's share of SSM's throughput): a sweep takes as long as its longest listing, not their sum
    (docs/performance.md). The SSM walk stays on the caller's thread.

    With cells, each cell that holds a tenant is listed too (DescribeStacks and DescribeDBSnapshots per
    cell, on the same workers), and a cell's listing counts only for the tenants that live there: a stack
    or snapshot named after a tenant of another cell (or of the central account) is left out, so a cell
    can never make the sweep delete or promote anything of another's.
    """
    root = deps.store.root
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sweep-gather") as pool:
        listed_stacks = pool.submit(lambda: [StackFact.from_api(s) for s in deps.stacks.all()])
        listed_snapshots = pool.submit(lambda: [SnapshotFact.from_api(s) for s in deps.rds.snapshots()])
        params = deps.store.parameters.list(f"{root}/{tenant}" if tenant else root)
        tenants, namespaces = parse_parameters(root, params)
        cells = cells_of(tenants)
        listings: dict[str, CellRefused | tuple[Future[list[StackFact]], Future[list[SnapshotFact]]]] = {}
        for key, cell in cells.items():
            try:
                bound = deps.in_cell(cell, "sweep")
            except CellRefused as exc:
                listings[key] = exc
                continue
            listings[key] = (pool.submit(_list_stacks, bound), pool.submit(_list_snapshots, bound))
        home = {name: cell_key(t.config.cell if t.config else None) for name, t in tenants.items()}
        stacks = _of_cell(listed_stacks.result(), "central", home, lambda s: s.name)
        snapshots = _of_cell(listed_snapshots.result(), "central", home, lambda s: s.id)
        unreachable: dict[str, str] = {}
        for key, listing in listings.items():
            if isinstance(listing, CellRefused):
                unreachable[key] = str(listing)
                continue
            stacks += _of_cell(listing[0].result(), key, home, lambda s: s.name)
            snapshots += _of_cell(listing[1].result(), key, home, lambda s: s.id)
    # The walk of the root holds the waiting list too; a tenant's sweep reads it.
    waiting = deps.store.waiting_in(params) if tenant is None else deps.store.waiting()
    parked = mark_parked(namespaces, ((w.namespace.name, w.promotion_id, w.stack) for w in waiting))
    facts = Facts(
        now=deps.clock(),
        tenants=tenants,
        namespaces=namespaces,
        stacks=stacks,
        snapshots=snapshots,
        tenant_filter=tenant,
        parked=parked,
    )
    for key, reason in unreachable.items():
        # A cell that refuses: its tenants' stacks and snapshots are unknown, so nothing of theirs is
        # planned from a listing (reported instead); their locks, active versions and state stay.
        logger.error("sweep cannot reach cell %s: %s", key, reason)
        for name, where in home.items():
            if where == key:
                tenants[name].problem = reason
    return facts


def _list_stacks(deps: Deps) -> list[StackFact]:
    return [StackFact.from_api(s) for s in deps.stacks.all()]


def _list_snapshots(deps: Deps) -> list[SnapshotFact]:
    return [SnapshotFact.from_api(s) for s in deps.rds.snapshots()]


def cells_of(tenants: dict[str, TenantState]) -> dict[str, Cell]:
    """The cells the tenants' configs name, by their key (account/region)."""
    found: dict[str, Cell] = {}
    for state in tenants.values():
        cell = state.config.cell if state.config is not None else None
        if cell is not None:
            found.setdefault(cell.key, cell)
    return found


def _of_cell[T](items: list[T], key: str, home: dict[str, str], name_of: Callable[[T], str]) -> list[T]:
    """The stacks or snapshots of a cell's listing that may be its tenants' (by the tenant in the name;
    a name of no tenant counts only in the central account, as before cells)."""
    kept = []
    for item in items:
        tenant = _tenant_in(name_of(item))
        where = home.get(tenant, "central") if tenant is not None else "central"
        if where == key:
            kept.append(item)
    return kept


def _tenant_in(name: str) -> str | None:
    parts = name.split("-")
    return f"{parts[0]}-{parts[1]}" if len(parts) >= 2 else None


def deleted_stack_names(deps: Deps) -> frozenset[str]:
    """Names of stacks deleted in the last ~90 days (CloudFormation's ``list_stacks`` keeps them)."""
    return frozenset(deps.stacks.deleted_names())


def headroom(deps: Deps) -> dict[str, Any]:
    """Used, max and free DB instances and manual snapshots, from RDS's account attributes.

    ``{"status": "unknown", "reason": ...}`` when they cannot be read (moto does not implement
    ``DescribeAccountAttributes``; an IAM policy may not allow it): the sweep goes on regardless.
    """
    try:
        quotas = deps.rds.quotas()
    except NotImplementedError as exc:
        return {"status": "unknown", "reason": f"not implemented by this endpoint: {exc}"[:300]}
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        # ResponseParserError (an endpoint answering with HTML) is not a BotoCoreError subclass.
        return {"status": "unknown", "reason": f"{type(exc).__name__}: {exc}"[:300]}
    out: dict[str, Any] = {"status": "ok"}
    for name, (used, most) in quotas.items():
        if name in QUOTAS:
            out[name] = {"used": used, "max": most, "free": most - used}
    missing = [q for q in QUOTAS if q not in out]
    if missing:
        out["status"] = "partial"
        out["reason"] = f"not reported: {', '.join(missing)}"
    return out


# --------------------------------------------------------------------------------------------------
# Carrying out
# --------------------------------------------------------------------------------------------------
def _ns(entry: Entry) -> Namespace:
    ns = entry.item.namespace
    if ns is None:
        raise ValueError(f"{entry.item.kind} {entry.item.target} has no namespace")
    return ns


def _execute(deps: Deps, facts: Facts, entry: Entry) -> None:
    kind = entry.item.kind
    if kind == DELETE_STACK:
        _delete_stack(deps, entry)
    elif kind == DELETE_DB_RECORD:
        ns = _ns(entry)
        version = Version.parse(entry.item.version)
        if version in _protected(deps.store.read(ns)) or deps.stacks.describe(ns.stack_name(version)) is not None:
            _settle(entry, False, "the version is held again or its stack exists")
            return
        deps.store.delete([deps.store.db_path(ns, version)])
        _settle(entry, True, "db record deleted")
    elif kind == DELETE_SNAPSHOT:
        _delete_snapshot(deps, facts, entry)
    elif kind == DRAIN_QUEUE:
        drained = drain(deps, _ns(entry))
        _settle(entry, drained is not None, drained.action if drained else "queue already empty or busy")
    elif kind == REQUEST_PROMOTION:
        _request_promotion(deps, facts, entry)
    elif kind == DELETE_LEFTOVERS:
        ns = _ns(entry)
        state = facts.namespaces.get(ns.name)
        fresh = deps.store.read(ns)
        if state is None or fresh.promotion is not None:
            _settle(entry, False, "a promotion is in flight again: its ending removes them")
            return
        # Only what is still a leftover now (a fresh read, parsed as the plan was).
        still = set(leftovers_of(deps.store.layout, fresh))
        removed = deps.store.delete([key for key in state.leftovers if key in still])
        _settle(entry, True, f"{removed} record(s) deleted")


def _protected(rec: EnvRecord) -> set[Version | None]:
    """Versions an environment holds as read now: active (its own and the state record's) and the
    promotion in flight's new and previous."""
    held: set[Version | None] = {rec.active, rec.state.active_version}
    if rec.promotion is not None:
        held |= {rec.promotion.version, rec.promotion.previous}
    return held


def _settle(entry: Entry, done: bool, outcome: str) -> None:
    entry.status = "done" if done else "refused"
    entry.outcome = outcome


def _delete_stack(deps: Deps, entry: Entry) -> None:
    ns, version = _ns(entry), Version.parse(entry.item.version)
    rec = deps.store.read(ns)
    in_flight = rec.promotion
    if in_flight is not None and version in (in_flight.version, in_flight.previous):
        _settle(entry, False, f"now a version of promotion {in_flight.id}")
        return
    if version in _protected(rec):
        _settle(entry, False, "now the active version")
        return
    # delete_stack re-checks active, tags, version tag and termination protection.
    deleted = delete_stack(deps, ns, version, f"sweep: {entry.item.detail}", active=rec.active)
    _settle(entry, deleted, "delete requested" if deleted else "refused by delete_stack (see log)")


def _delete_snapshot(deps: Deps, facts: Facts, entry: Entry) -> None:
    if entry.item.reason == "encrypted_copy_unused":
        ns = _ns(entry)
        fresh = deps.store.read(ns)
        holds = {v.value for v in _protected(fresh) if v} | {q.version for q in fresh.waiting if q.version}
        if entry.item.version in holds:
            _settle(entry, False, f"now held by {ns}")
            return
    if entry.item.reason == "source_snapshot_unused":
        ns = _ns(entry)
        state = facts.tenants.get(ns.tenant.name)
        config = state.config if state else None
        for env in config.targets if config else ():
            rec = deps.store.read(config.namespace(env)) if config else None
            if rec is None:
                continue
            held = {v.value for v in _protected(rec) if v} | {q.version for q in rec.waiting if q.version}
            if entry.item.version in held:
                _settle(entry, False, f"now held by {env}")
                return
    deleted = deps.rds.delete_snapshot(entry.item.target)
    _settle(entry, deleted, "deleted" if deleted else "already gone")


def _request_promotion(deps: Deps, facts: Facts, entry: Entry) -> None:
    snapshot = next((s for s in facts.snapshots if s.id == entry.item.target), None)
    if snapshot is None or source_snapshot_of(snapshot, facts.tenants) is None:
        raise ValueError(f"{entry.item.target} is not a source snapshot")
    environment = entry.item.environment or ""
    # Put first, tag after: a failed put leaves no tag, so the next sweep asks again.
    deps.bus.put(
        [
            ev.promotion_requested(
                tenant=entry.item.tenant or "",
                environment=environment,
                version=entry.item.version,
                requested_by=f"tierlift:sweep/{snapshot.id}",
                promotion_id=ev.automatic_request_id(snapshot.id, environment),
            )
        ]
    )
    if snapshot.arn:
        value = snapshot_tag_value(snapshot.tags, environment)
        deps.rds.tag(snapshot.arn, {SWEEP_REQUESTED_TAG: value})
        snapshot.tags[SWEEP_REQUESTED_TAG] = value  # the next environment's request adds to it
    _settle(entry, True, "Promotion Requested put")


def _admit_parked(deps: Deps, result: SweepResult) -> None:
    """The admission a DB stack's ``DELETE_COMPLETE`` makes; an AWS error is reported, not raised."""
    try:
        admitted = admit_waiting(deps)
    except (ClientError, BotoCoreError, PutEventsFailed, PromotionError, InvalidConfig, CellRefused, ValueError) as exc:
        result.errors.append(f"admit waiting: {type(exc).__name__}: {exc}"[:500])
        logger.exception("sweep could not admit the waiting promotions")
        return
    result.admitted = admitted


def _put_events(deps: Deps, result: SweepResult) -> None:
    """``Stack Swept`` for each stack the sweep deleted, batched (10 per ``PutEvents``)."""
    out: list[OutboundEvent] = []
    for entry in result.entries:
        item = entry.item
        if entry.status != "done" or item.tenant is None or item.environment is None:
            continue
        if item.kind == DELETE_STACK:
            out.append(
                ev.outbound(
                    ev.STACK_SWEPT,
                    tenant=item.tenant,
                    environment=item.environment,
                    promotion_id=result.run_id,
                    version=item.version,
                    reason=f"{item.reason}: {item.detail}",
                    stack=item.target,
                )
            )
    if out:
        try:
            deps.bus.put(out)
        except (ClientError, BotoCoreError, PutEventsFailed) as exc:
            result.errors.append(f"put events: {exc}"[:500])
            logger.exception("sweep could not put its events")


# --------------------------------------------------------------------------------------------------
# Stuck promotions: observe the real state, then call what the event handler would have called
# --------------------------------------------------------------------------------------------------
def _reconcile(deps: Deps, facts: Facts, entry: Entry, *, dry_run: bool) -> None:
    ns = _ns(entry)
    rec = deps.store.read(ns)
    promotion = rec.promotion
    if entry.item.reason == "retaken_lock":
        if dry_run:
            entry.outcome = "would release the lock (its request had ended)"
        elif rec.retaken is None or rec.retaken.id != entry.item.target:
            _settle(entry, False, "the lock was released")
        else:
            released = release_retaken(deps, rec)
            entry.status = "done" if released.action == "release" else "waiting"
            entry.outcome = _said("release", released)
        return
    if promotion is None or promotion.id != entry.item.target:
        _settle(entry, False, "promotion already ended")
        return
    if entry.item.reason == "lost_copy_event":
        # RDS-EVENT-0197 of its encrypted copy was lost: start the restore as that event would have
        if dry_run:
            entry.outcome = "would create the stack from the encrypted copy, as RDS-EVENT-0197 would"
            return
        resumed = resume_after_copy(deps, Versioned(ns, promotion.version))
        entry.status = "waiting" if resumed.action in ("ignore", "wait") else "done"
        entry.outcome = _said("copy finished", resumed)
        return
    waiting = facts.parked.get(ns.name)
    if waiting is not None and waiting[0] == promotion.id:
        mark_parked({ns.name: NamespaceState(ns, promotion=promotion)}, [(ns.name, *waiting)])
    outcome = reconcile(deps, promotion, dry_run=dry_run)
    if dry_run:
        entry.outcome = outcome
    else:
        entry.status = "waiting" if outcome.startswith("wait") else "done"
        entry.outcome = outcome


def _said(what: str, result: Result) -> str:
    """What a use case did, for the entry: ``wait: <why>`` when it left the promotion as it was."""
    if result.action in ("ignore", "wait"):
        return f"wait: {result.reason}"
    return f"{what}: {result.action}"


def reconcile(deps: Deps, promotion: Promotion, *, dry_run: bool = False) -> str:
    """Move a stuck promotion on as its lost event would have; returns what was (or would be) done.

    Each branch re-reads the environment and calls the use case that event's handler calls, which
    claims (create-only) before acting: the sweep and a late event racing each other end the promotion
    once, and a claim whose owner's lease is still running is left to that owner.
    """
    ns, stage = promotion.namespace, promotion.stage
    deps = of_promotion(deps, promotion)  # its stack and service are in the cell it started in
    if promotion.ending is not None:
        if dry_run:
            return f"would resume: the {promotion.ending.outcome} ending"
        rec = deps.store.read(ns)
        if rec.promotion is None or rec.promotion.id != promotion.id:
            return "promotion already moved on"
        return _said("resume", drain_after(deps, ns, end(deps, rec, rec.promotion, Outcome(promotion.ending.outcome))))
    if stage is Stage.AWAITING_APPROVAL:
        if dry_run:
            return "would cancel: approval timed out"
        rec = deps.store.read(ns)
        if rec.promotion is None or rec.promotion.id != promotion.id:
            return "promotion already ended"
        cancelled = drain_after(deps, ns, end(deps, rec, rec.promotion, Outcome.CANCELLED, "approval timed out"))
        return _said("approval expired", cancelled)
    if stage is Stage.REQUESTED or (stage is Stage.RESTORING and not _has_stack(deps, promotion)):
        return _restart(deps, promotion, dry_run=dry_run)
    if stage is Stage.RESTORING or (stage is Stage.DEPLOYING and promotion.deployment_id is None):
        return _reconcile_stack(deps, promotion, dry_run=dry_run)
    if stage is Stage.DEPLOYING:
        return _reconcile_deployment(deps, promotion, dry_run=dry_run)
    return f"wait: stage {stage} has no reconciliation"


def _restart(deps: Deps, promotion: Promotion, *, dry_run: bool) -> str:
    """A promotion holding the lock without its stack: a start cut short (its owner died after taking the
    lock) or parked (waiting for headroom or a stack's delete). Start it again, as the owner's retry
    (``requests.resume_own``) or an admission (``stack_status.admit_waiting``) would: starting is
    idempotent (the same stack name and ``ClientRequestToken``). Then observe the stack, as its first
    status event would be handled."""
    lock = promotion.request
    if promotion.parked:
        return _admit(deps, promotion, dry_run=dry_run)
    if lock_verdict(deps, lock) is ClaimVerdict.BUSY:
        return f"wait: the start is {lock.owner}'s until {lock.lease_until}"
    if dry_run:
        return "would re-run the start (create or adopt its stack)"
    resumed = run_locked(deps, lock, None, {})
    outcome = resumed if resumed is not None else ignore("the environment's state moved on")
    if outcome.action != "start":
        return _said("request", drain_after(deps, promotion.namespace, outcome))
    return "request: start" + _observe_started(deps, promotion)


def _admit(deps: Deps, promotion: Promotion, *, dry_run: bool) -> str:
    """A parked promotion whose stack's ``DELETE_COMPLETE`` was lost: admitted as that event would."""
    waiting = [w for w in deps.store.waiting() if w.promotion_id == promotion.id]
    stack = waiting[0].stack if waiting else None
    if dry_run:
        return f"would admit it, as the DELETE_COMPLETE of {stack or 'a DB stack'} would"
    admit_waiting(deps, stack)
    return "admit: start" + _observe_started(deps, promotion)


def _observe_started(deps: Deps, promotion: Promotion) -> str:
    """After a start: the stack's status, as its first status event would be handled."""
    fresh = deps.store.read(promotion.namespace).promotion
    if fresh is None or fresh.id != promotion.id or fresh.stage is not Stage.RESTORING:
        return ""
    if not _has_stack(deps, fresh):
        return "; wait: still parked" if fresh.parked else "; wait: no stack yet"
    return f"; {_reconcile_stack(deps, fresh, dry_run=False)}"


def _has_stack(deps: Deps, promotion: Promotion) -> bool:
    """Does the promotion's own DB stack exist (by its tags, never by its name alone)?"""
    stack = deps.stacks.describe(promotion.namespace.stack_name(promotion.version))
    return stack is not None and Stacks.tags(stack).get(PROMOTION_TAG) == promotion.id


def _reconcile_stack(deps: Deps, promotion: Promotion, *, dry_run: bool) -> str:
    versioned = Versioned(promotion.namespace, promotion.version)
    stack = deps.stacks.describe(versioned.stack_name)
    status = stack.get("StackStatus", "") if stack else "DELETE_COMPLETE"
    if status in CREATE_PENDING_STATES:
        return f"wait: stack {versioned.stack_name} is {status}"
    if status == CREATE_OK or status in CREATE_FAILED_STATES:
        if dry_run:
            return f"would apply stack status {status}"
        stack_id = str(stack.get("StackId") or "") if stack else None
        outcome = apply_stack_status(deps, versioned, status, "observed by the sweep", stack_id=stack_id)
        return _said(f"stack {status}", outcome)
    reason = f"database stack {versioned.stack_name} is {status}, it will not become usable"
    if dry_run:
        return f"would fail: {reason}"
    rec = deps.store.read(promotion.namespace)
    if rec.promotion is None or rec.promotion.id != promotion.id:
        return "promotion already moved on"
    failed = drain_after(deps, promotion.namespace, end(deps, rec, rec.promotion, Outcome.FAILED, reason))
    return _said(f"stack {status}", failed)


def deployment_outcome(service: dict[str, Any] | None, promotion: Promotion) -> tuple[str, str]:
    """``COMPLETED``/``FAILED``/``IN_PROGRESS`` for the promotion's deployment, and why."""
    if service is None:
        return "FAILED", "the service no longer exists"
    for deployment in service.get("deployments", []) or []:
        if deployment.get("id") == promotion.deployment_id:
            state = str(deployment.get("rolloutState") or "IN_PROGRESS")
            why = str(deployment.get("rolloutStateReason") or f"deployment {promotion.deployment_id} {state}")
            return (state if state in ("COMPLETED", "FAILED") else "IN_PROGRESS"), why
    running = service.get("taskDefinition")
    if running == promotion.task_definition:
        return "COMPLETED", f"deployment {promotion.deployment_id} is gone and the service runs the new task definition"
    return "FAILED", f"deployment {promotion.deployment_id} is gone and the service runs {running}"


def _reconcile_deployment(deps: Deps, promotion: Promotion, *, dry_run: bool) -> str:
    ns = promotion.namespace
    if not promotion.deployment_id:
        return "wait: deploying without a deployment id"
    target = promotion.request.target_settings()
    service = deps.services.describe_service(target.cluster, target.service)
    outcome, why = deployment_outcome(service, promotion)
    if outcome == "IN_PROGRESS":
        return f"wait: {why}"
    if dry_run:
        return f"would apply deployment outcome {outcome}: {why}"
    done = apply_deployment_outcome(deps, deps.store.read(ns), promotion.deployment_id, outcome, why)
    return _said(f"deployment {outcome}", done)


__all__ = ["SweepResult", "deployment_outcome", "gather", "headroom", "on_schedule", "reconcile", "run_sweep"]
