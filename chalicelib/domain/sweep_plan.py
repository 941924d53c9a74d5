"""The sweep's planner: plain data in, a list of planned actions (each with its reason) out. No AWS.

:func:`parse_parameters` turns one ``get_parameters_by_path`` walk of the SSM root into per-tenant
and per-namespace state, each environment through the store's own parser
(:func:`chalicelib.domain.tree.parse_env`: the state record, the lock, deploy entries, ``db/``,
``queue/``, ``cancel/``); :func:`plan` takes that, every stack, every manual snapshot, ``now`` and the
settings, and says what the sweep should do and why. :mod:`chalicelib.usecases.sweep` gathers the facts and
carries the plan out; a dry run stops after planning.

Safety rules (each has a test that fails without it):

* only stacks named ``<namespace>-db-<version>`` whose tags mark them tierlift's for that namespace
  and version (``Namespace.owns`` plus the version tag) are ever deleted;
* never the active version: the environment's (``EnvRecord.active``: the ending's once claimed, the
  cutover's, else the state record's) nor the state record's own (an unhealthy or missing active
  stack is reported, never acted on);
* never the new or the previous version of the promotion in flight;
* never a stack younger than the grace period (``DELETE_FAILED`` stacks are retried at once);
* never a termination-protected stack;
* nothing at all in a namespace whose SSM state cannot be read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from chalicelib.domain.config import InvalidConfig, TenantConfig, parse_config
from chalicelib.domain.layout import Layout
from chalicelib.domain.model import COPY_FAILED, EnvRecord, Promotion, QueuedRequest, Request, Stage
from chalicelib.domain.names import (
    ENCRYPTED_COPY_KIND,
    ENCRYPTED_COPY_SUFFIX,
    ENVIRONMENT_TAG,
    KIND_TAG,
    TENANT_TAG,
    VERSION_TAG,
    InvalidName,
    Namespace,
    Tenant,
    Version,
    Versioned,
    tags_to_dict,
)
from chalicelib.domain.tree import Params, parse_env
from chalicelib.settings import Settings


class FindingKind(StrEnum):
    """What the sweep does with a finding: the first seven change something, ``skip`` and ``report`` never do."""

    DELETE_STACK = "delete_stack"
    DELETE_DB_RECORD = "delete_db_record"
    DELETE_SNAPSHOT = "delete_snapshot"
    RECONCILE = "reconcile"
    DRAIN_QUEUE = "drain_queue"
    DELETE_LEFTOVERS = "delete_leftovers"
    REQUEST_PROMOTION = "request_promotion"
    SKIP = "skip"
    REPORT = "report"


DELETE_STACK = FindingKind.DELETE_STACK
DELETE_DB_RECORD = FindingKind.DELETE_DB_RECORD
DELETE_SNAPSHOT = FindingKind.DELETE_SNAPSHOT
RECONCILE = FindingKind.RECONCILE
DRAIN_QUEUE = FindingKind.DRAIN_QUEUE
DELETE_LEFTOVERS = FindingKind.DELETE_LEFTOVERS
REQUEST_PROMOTION = FindingKind.REQUEST_PROMOTION
SKIP = FindingKind.SKIP
REPORT = FindingKind.REPORT
ACTING_KINDS = (
    DELETE_STACK,
    DELETE_DB_RECORD,
    DELETE_SNAPSHOT,
    RECONCILE,
    DRAIN_QUEUE,
    REQUEST_PROMOTION,
    DELETE_LEFTOVERS,
)

FINAL_SNAPSHOT_KIND = "final-snapshot"
SOURCE_SNAPSHOT_KIND = "source-snapshot"
# Tag a sweep puts on a source snapshot once it has requested that snapshot's promotion to an
# environment (value: the environments, space separated), so a rejected request is not repeated hourly.
SWEEP_REQUESTED_TAG = "tierlift:sweep-requested"
# Stages without their own timeout (terminal steps a crash interrupted) use this one.
TERMINAL_STAGE_TIMEOUT = 1800
DELETING = frozenset({"DELETE_IN_PROGRESS"})
HEALTHY_ACTIVE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE"})


# --------------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackFact:
    """One CloudFormation stack as ``describe_stacks`` lists it."""

    name: str
    status: str
    created: datetime
    tags: dict[str, str]
    protected: bool = False

    @classmethod
    def from_api(cls, stack: dict[str, Any]) -> StackFact:
        return cls(
            name=str(stack["StackName"]),
            status=str(stack.get("StackStatus", "")),
            created=stack["CreationTime"],
            tags=tags_to_dict(stack.get("Tags")),
            protected=bool(stack.get("EnableTerminationProtection")),
        )


@dataclass(frozen=True)
class SnapshotFact:
    """One manual RDS snapshot as ``describe_db_snapshots`` lists it (tags included)."""

    id: str
    instance: str
    status: str
    created: datetime | None
    tags: dict[str, str]
    arn: str = ""

    @classmethod
    def from_api(cls, snapshot: dict[str, Any]) -> SnapshotFact:
        return cls(
            id=str(snapshot.get("DBSnapshotIdentifier", "")),
            instance=str(snapshot.get("DBInstanceIdentifier", "")),
            status=str(snapshot.get("Status", "")),
            created=snapshot.get("SnapshotCreateTime"),
            tags=tags_to_dict(snapshot.get("TagList")),
            arn=str(snapshot.get("DBSnapshotArn", "")),
        )


@dataclass
class NamespaceState:
    """What SSM holds for one namespace. ``problems`` non-empty means: touch nothing here."""

    ns: Namespace
    active: Version | None = None
    # The state record's own active version: the same as ``active`` but while a promotion cuts over (then
    # it is the promotion's previous version) or in a tree left inconsistent by hand. Never deleted either.
    recorded_active: Version | None = None
    promotion: Promotion | None = None
    queued: list[QueuedRequest] = field(default_factory=list)
    db_versions: list[Version] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Records no promotion needs any more (older state records, a crashed claim's entry, answered queue
    # entries): the next ending removes them; the sweep does when no promotion is in flight.
    leftovers: list[str] = field(default_factory=list)
    retaken: Request | None = None  # a lock taken again after its request ended (EnvRecord.retaken)

    @property
    def in_flight(self) -> frozenset[str]:
        """The versions of the promotion in flight: new and previous."""
        if self.promotion is None:
            return frozenset()
        return frozenset(v.value for v in (self.promotion.version, self.promotion.previous) if v)

    @property
    def actives(self) -> frozenset[str]:
        """The active version and the state record's (one version but while a promotion cuts over)."""
        return frozenset(v.value for v in (self.active, self.recorded_active) if v is not None)

    @property
    def held(self) -> frozenset[str]:
        """Versions this namespace holds: active, in flight, queued."""
        versions = set(self.in_flight) | self.actives
        versions.update(q.version for q in self.queued if q.version)
        return frozenset(versions)


@dataclass
class TenantState:
    tenant: Tenant
    config: TenantConfig | None = None
    problem: str | None = None


@dataclass
class Facts:
    """Everything the planner looks at, gathered in bulk."""

    now: datetime
    tenants: dict[str, TenantState]
    namespaces: dict[str, NamespaceState]
    stacks: list[StackFact]
    snapshots: list[SnapshotFact]
    # Names of stacks deleted recently (``list_stacks`` keeps them ~90 days); None = not looked up.
    deleted_stacks: frozenset[str] | None = None
    tenant_filter: str | None = None
    stacks_known: bool = True  # ``stacks`` lists every stack (False in hand-made facts of some tests)
    # The waiting list (``/<root>/waiting/``): namespace -> (promotion id, the stack it waits for to be
    # deleted, or None: waiting for DB-instance headroom). See :func:`mark_parked`.
    parked: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @cached_property
    def live_stacks(self) -> frozenset[str]:
        """Names of the stacks not ``DELETE_COMPLETE`` (computed once per sweep)."""
        return frozenset(s.name for s in self.stacks if s.status != "DELETE_COMPLETE")


def mark_parked(
    namespaces: dict[str, NamespaceState], entries: Iterable[tuple[str, str, str | None]]
) -> dict[str, tuple[str, str | None]]:
    """The waiting list's entries ``(namespace, promotion id, stack or None)`` that are the promotion in
    flight of their namespace: those promotions are marked parked (their stage is ``requested``)."""
    parked: dict[str, tuple[str, str | None]] = {}
    for namespace, promotion_id, stack in entries:
        state = namespaces.get(namespace)
        promotion = state.promotion if state is not None else None
        if promotion is None or promotion.id != promotion_id:
            continue  # a leftover entry: the admission removes it
        promotion.parked = "waiting for " + (f"stack {stack} to be deleted" if stack else "DB instance headroom")
        parked[namespace] = (promotion_id, stack)
    return parked


def parse_parameters(root: str, params: Params) -> tuple[dict[str, TenantState], dict[str, NamespaceState]]:
    """Split one recursive walk of the SSM root into tenant configs and per-namespace state."""
    layout = Layout(root)
    tenants: dict[str, TenantState] = {}
    grouped: dict[str, tuple[Namespace, Params]] = {}
    for name, item in sorted(params.items()):
        split = layout.split(name)
        if split is None:
            continue
        tenant_name, env, rest = split
        try:
            tenant = Tenant.parse(tenant_name)
        except InvalidName:
            continue
        if rest == "config" and not env:
            owner = tenants.setdefault(tenant.name, TenantState(tenant))
            try:
                owner.config = parse_config(tenant, item[0])
            except InvalidConfig as exc:
                owner.problem = str(exc)
            continue
        try:
            ns = tenant.namespace(env)
        except InvalidName:
            continue
        grouped.setdefault(ns.name, (ns, {}))[1][name] = item
    namespaces: dict[str, NamespaceState] = {}
    for ns, values in grouped.values():
        namespaces[ns.name] = _namespace_state(layout, ns, values)
    for tenant_state in list(tenants.values()):
        for env in tenant_state.config.targets if tenant_state.config else ():
            ns = tenant_state.tenant.namespace(env)
            namespaces.setdefault(ns.name, NamespaceState(ns))
    for ns_entry in namespaces.values():
        tenants.setdefault(ns_entry.ns.tenant.name, TenantState(ns_entry.ns.tenant))
    return tenants, namespaces


def _namespace_state(layout: Layout, ns: Namespace, values: Params) -> NamespaceState:
    """One namespace's state through the store's own parser; anything unreadable is a problem."""
    try:
        rec = parse_env(layout, ns, values)
        if rec.promotion is not None:
            _ = rec.promotion.version, rec.promotion.previous, rec.promotion.stage
    except (InvalidName, ValueError, TypeError) as exc:
        return NamespaceState(ns, problems=[f"{ns.name}: {exc}"])
    return NamespaceState(
        ns,
        active=rec.active,
        recorded_active=rec.state.active_version,
        promotion=rec.promotion,
        queued=rec.waiting,
        db_versions=[Version.parse(v) for v in rec.db],
        leftovers=leftovers_of(layout, rec),
        retaken=rec.retaken,
    )


def leftovers_of(layout: Layout, rec: EnvRecord) -> list[str]:
    """Parameters of an environment no one needs any more: state records older than the newest, deploy
    entries of promotions no longer in flight and, with no promotion in flight, queue entries already
    answered and cancel marks of requests that no longer wait. (An ending deletes the same ones.)"""
    ns = rec.namespace
    leftovers = list(rec.stale)
    if rec.promotion is None:
        leftovers += [layout.queue(ns, i) for i in rec.leftovers]
        waiting = {q.id for q in rec.waiting}
        leftovers += [layout.cancel(ns, i) for i in rec.cancels if i not in waiting]
    return leftovers


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Planned:
    """One thing the sweep would do (or refuses to do, or reports), and why.

    ``reason`` is a short code (counted in the result); ``detail`` is the sentence an operator reads.
    """

    kind: str
    reason: str
    detail: str
    target: str
    tenant: str | None = None
    environment: str | None = None
    version: str | None = None

    @property
    def namespace(self) -> Namespace | None:
        if self.tenant is None or self.environment is None:
            return None
        return Tenant.parse(self.tenant).namespace(self.environment)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Plan:
    items: list[Planned] = field(default_factory=list)
    # Things looked at and left alone for an ordinary reason (active stack, within retention, ...).
    kept: Counter[str] = field(default_factory=Counter)

    def add(
        self, kind: str, reason: str, detail: str, target: str, ns: Namespace | None = None, version: str | None = None
    ) -> None:
        self.items.append(
            Planned(
                kind,
                reason,
                detail,
                target,
                ns.tenant.name if ns else None,
                ns.environment if ns else None,
                version,
            )
        )

    @property
    def actions(self) -> list[Planned]:
        return [p for p in self.items if p.kind in ACTING_KINDS]


def _age(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def stage_timeout(settings: Settings, stage: str) -> int:
    return int(settings.stage_timeouts.get(stage, TERMINAL_STAGE_TIMEOUT))


def plan(facts: Facts, settings: Settings) -> Plan:
    """Decide every action of one sweep from the gathered facts."""
    result = Plan()
    _plan_stacks(facts, settings, result)
    _plan_db_records(facts, result)
    _plan_promotions(facts, settings, result)
    _plan_snapshots(facts, settings, result)
    for request in lost_snapshot_requests(facts, settings):
        result.items.append(request)
    return result


def _in_scope(facts: Facts, tenant: str | None) -> bool:
    return facts.tenant_filter is None or tenant == facts.tenant_filter


def _live_stack_names(facts: Facts) -> frozenset[str]:
    return facts.live_stacks


def _plan_stacks(facts: Facts, settings: Settings, out: Plan) -> None:
    live = _live_stack_names(facts)
    for stack in facts.stacks:
        if stack.status == "DELETE_COMPLETE":
            continue
        try:
            parsed = Versioned.parse_stack(stack.name)
        except InvalidName:
            continue  # not named like a DB stack: not the sweep's business
        ns, version = parsed.namespace, parsed.version.value
        if not _in_scope(facts, ns.tenant.name):
            continue
        state = facts.namespaces.get(ns.name) or NamespaceState(ns)
        active = state.active.value if state.active else None
        if not ns.owns(stack.tags) or stack.tags.get(VERSION_TAG) != version:
            kind = REPORT if version in state.actives else SKIP
            out.add(
                kind,
                "not_tierlift",
                f"{stack.name} lacks tierlift's tags for {ns} version {version}",
                stack.name,
                ns,
                version,
            )
            continue
        if state.problems:
            out.add(
                SKIP,
                "unreadable_state",
                f"{ns}'s SSM state is unreadable: {'; '.join(state.problems)}",
                stack.name,
                ns,
                version,
            )
            continue
        problem = tenant_problem(facts, ns.tenant.name)
        if problem:
            # No (readable) config: a wrong SSM root or a half-removed tenant must not look like orphans.
            out.add(SKIP, "unknown_tenant", problem, stack.name, ns, version)
            continue
        if version in state.actives:
            if stack.status not in HEALTHY_ACTIVE:
                out.add(
                    REPORT,
                    "active_stack_unhealthy",
                    f"active version's stack is {stack.status}",
                    stack.name,
                    ns,
                    version,
                )
            else:
                out.kept["active"] += 1
            continue
        if version in state.in_flight:
            assert state.promotion is not None
            out.add(
                SKIP,
                "in_flight",
                f"version of promotion {state.promotion.id} ({state.promotion.stage})",
                stack.name,
                ns,
                version,
            )
            continue
        if stack.protected:
            out.add(SKIP, "termination_protected", "termination protection is on", stack.name, ns, version)
            continue
        if stack.status in DELETING:
            out.add(SKIP, "delete_in_progress", "already being deleted", stack.name, ns, version)
            continue
        if stack.status == "DELETE_FAILED":
            out.add(DELETE_STACK, "delete_failed", "an earlier delete failed; retrying it", stack.name, ns, version)
            continue
        age = _age(facts.now, stack.created)
        if age < settings.grace_seconds:
            out.add(
                SKIP,
                "grace_period",
                f"created {_hours(age)} ago, grace is {_hours(settings.grace_seconds)}",
                stack.name,
                ns,
                version,
            )
            continue
        detail = f"not active ({active or 'none'}), not in flight, {stack.status}, created {_hours(age)} ago"
        out.add(DELETE_STACK, "orphan", detail, stack.name, ns, version)
    for state in facts.namespaces.values():
        if state.active is None or state.problems or not _in_scope(facts, state.ns.tenant.name):
            continue
        name = state.ns.stack_name(state.active)
        if name not in live:
            out.add(
                REPORT,
                "active_stack_missing",
                f"the active version has no stack {name}",
                name,
                state.ns,
                state.active.value,
            )


def _plan_db_records(facts: Facts, out: Plan) -> None:
    live = _live_stack_names(facts)
    for state in facts.namespaces.values():
        if not _in_scope(facts, state.ns.tenant.name):
            continue
        for version in state.db_versions:
            if state.ns.stack_name(version) in live:
                continue
            target = f"{state.ns}/db/{version}"
            if state.problems:
                out.add(SKIP, "unreadable_state", "; ".join(state.problems), target, state.ns, version.value)
            elif version.value in state.actives:
                continue  # the active version's: reported as active_stack_missing, never deleted
            elif version.value in state.in_flight:
                out.add(SKIP, "in_flight", "version of the promotion in flight", target, state.ns, version.value)
            else:
                out.add(
                    DELETE_DB_RECORD, "no_stack", "db record with no stack behind it", target, state.ns, version.value
                )


def tenant_problem(facts: Facts, tenant: str) -> str | None:
    """Why the sweep may not delete anything of ``tenant`` (no readable config), or None."""
    state = facts.tenants.get(tenant)
    if state is None or (state.config is None and state.problem is None):
        return f"tenant {tenant} has no config in SSM"
    if state.config is None:
        return f"tenant {tenant}'s config is invalid: {state.problem}"
    return None


def _plan_promotions(facts: Facts, settings: Settings, out: Plan) -> None:
    for tenant in facts.tenants.values():
        if tenant.problem and _in_scope(facts, tenant.tenant.name):
            out.add(REPORT, "invalid_config", tenant.problem, f"{tenant.tenant}/config")
    for state in facts.namespaces.values():
        if not _in_scope(facts, state.ns.tenant.name):
            continue
        if state.problems:
            out.add(REPORT, "unreadable_state", "; ".join(state.problems), state.ns.name, state.ns)
            continue
        promotion = state.promotion
        if promotion is not None:
            _plan_promotion(facts, settings, state, promotion, out)
        elif state.retaken is not None:
            lease = _parse_time(state.retaken.lease_until or "")
            if lease is None or facts.now >= lease:
                detail = f"the lock is held by request {state.retaken.id}, which had ended before it was taken"
                out.add(RECONCILE, "retaken_lock", detail, state.retaken.id, state.ns, state.retaken.version)
            else:
                out.kept["lock_lease_running"] += 1
        elif state.queued:
            wait = stage_timeout(settings, "requested")
            oldest = min(state.queued, key=lambda q: q.requested_at)
            queued_at = _parse_time(oldest.requested_at)
            if queued_at is None or _age(facts.now, queued_at) > wait:
                detail = f"request {oldest.id} waits with no promotion in flight"
                out.add(DRAIN_QUEUE, "orphaned_queue", detail, oldest.id, state.ns, oldest.version)
        _plan_leftovers(facts, state, out)


def _plan_promotion(facts: Facts, settings: Settings, state: NamespaceState, promotion: Promotion, out: Plan) -> None:
    version = promotion.version.value
    if promotion.parked is not None:
        # Parked promotions are admitted in request order when a DB stack finishes deleting (its event,
        # or the sweep's admission pass): no one of them is "stuck" for waiting, however long. Only one
        # waiting for a stack that is gone lost that stack's DELETE_COMPLETE: it is admitted as it would.
        waits_for = facts.parked.get(state.ns.name, (promotion.id, None))[1]
        if waits_for is None or waits_for in _live_stack_names(facts) or not facts.stacks_known:
            out.kept["parked"] += 1
            return
    if promotion.stage is Stage.AWAITING_APPROVAL:
        expires = _parse_time(promotion.expires_at)
        if expires is not None and facts.now >= expires:
            detail = f"promotion {promotion.id} waited for approval until {expires:%Y-%m-%d %H:%M} UTC"
            out.add(RECONCILE, "approval_expired", detail, promotion.id, state.ns, version)
        else:
            out.kept["awaiting_approval"] += 1
        return
    stage = promotion.stage
    copy_id = promotion.namespace.encrypted_copy_id(promotion.version)
    if (
        stage is Stage.RESTORING
        and promotion.request.encrypt_with
        and facts.stacks_known
        and promotion.namespace.stack_name(promotion.version) not in _live_stack_names(facts)
    ):
        # Waiting for the encrypted copy of its unencrypted source snapshot (encryption.py): RDS-EVENT-0197
        # starts the restore. A copy that is available with no stack yet lost that event; one still
        # copying is waited for, however long; no copy at all is a start cut short (below).
        copy = next((s for s in facts.snapshots if s.id == copy_id), None)
        if copy is not None and copy.status == "available":
            detail = f"promotion {promotion.id}: its encrypted copy {copy_id} is available and no stack was created"
            out.add(RECONCILE, "lost_copy_event", detail, promotion.id, state.ns, version)
            return
        if copy is not None and copy.status not in COPY_FAILED:
            out.kept["encrypting"] += 1
            return
    if (
        stage is Stage.RESTORING
        and promotion.parked is None
        and facts.stacks_known
        and (promotion.namespace.stack_name(promotion.version) not in _live_stack_names(facts))
    ):
        # Holding the lock with no stack: its start was cut short (or waits to be admitted).
        stage = Stage.REQUESTED
    timeout = stage_timeout(settings, stage)
    updated = _parse_time(promotion.updated) or _parse_time(promotion.started)
    idle = _age(facts.now, updated) if updated else None
    if idle is None or idle > timeout:
        since = f"no progress for {_hours(idle)}" if idle is not None else "no valid updated time"
        detail = f"promotion {promotion.id} {stage}: {since} (timeout {_hours(timeout)})"
        out.add(RECONCILE, f"stuck_{stage}", detail, promotion.id, state.ns, version)
    else:
        out.kept["promotion_progressing"] += 1


def _plan_leftovers(facts: Facts, state: NamespaceState, out: Plan) -> None:
    """Records nothing needs any more go once no promotion is in flight (an ending would remove them)."""
    if state.promotion is not None or not state.leftovers:
        return
    detail = f"{len(state.leftovers)} record(s) left by crashed or duplicate invocations"
    out.add(DELETE_LEFTOVERS, "leftover_records", detail, state.ns.name, state.ns)


def _snapshot_namespace(tags: dict[str, str]) -> tuple[Namespace, Version] | None:
    try:
        ns = Tenant.parse(tags.get(TENANT_TAG)).namespace(tags.get(ENVIRONMENT_TAG, ""))
        return ns, Version.parse(tags.get(VERSION_TAG))
    except InvalidName:
        return None


def is_final_snapshot(snapshot: SnapshotFact) -> bool:
    """A DB stack's final snapshot: tagged ``final-snapshot``, or a snapshot of a DB stack's instance.

    CloudFormation's ``DeletionPolicy: Snapshot`` names the snapshot itself and copies the instance's
    tags (``CopyTagsToSnapshot``), so an untagged-kind snapshot of ``<namespace>-<version>`` counts too.
    """
    kind = snapshot.tags.get(KIND_TAG)
    if kind == FINAL_SNAPSHOT_KIND:
        return True
    if kind is not None:
        return False
    owner = _snapshot_namespace(snapshot.tags)
    return owner is not None and snapshot.instance == owner[0].instance_id(owner[1])


def source_snapshot_of(snapshot: SnapshotFact, tenants: dict[str, TenantState]) -> tuple[TenantConfig, Version] | None:
    """(config, version) when the snapshot is a source snapshot of a tenant with a readable config."""
    try:
        parsed = Versioned.parse_snapshot(snapshot.id)
    except InvalidName:
        return None
    state = tenants.get(parsed.namespace.tenant.name)
    config = state.config if state else None
    if config is None or parsed.namespace != config.source or snapshot.instance != config.source_db_instance:
        return None
    return config, parsed.version


def _plan_snapshots(facts: Facts, settings: Settings, out: Plan) -> None:
    retention = settings.final_snapshot_retention_days * 86400
    sources: dict[str, list[tuple[Version, SnapshotFact]]] = {}
    for snapshot in facts.snapshots:
        if snapshot.tags.get(KIND_TAG) == ENCRYPTED_COPY_KIND or snapshot.id.endswith(ENCRYPTED_COPY_SUFFIX):
            _plan_encrypted_copy(facts, settings, snapshot, out)
            continue
        if is_final_snapshot(snapshot):
            _plan_final_snapshot(facts, snapshot, retention, out)
            continue
        found = source_snapshot_of(snapshot, facts.tenants)
        if found is not None and _in_scope(facts, found[0].tenant.name):
            sources.setdefault(found[0].tenant.name, []).append((found[1], snapshot))
    by_tenant: dict[str, list[NamespaceState]] = {}
    for state in facts.namespaces.values():
        by_tenant.setdefault(state.ns.tenant.name, []).append(state)
    for tenant, snapshots in sources.items():
        config = facts.tenants[tenant].config
        assert config is not None
        states = by_tenant.get(tenant, [])
        if any(s.problems for s in states):
            out.add(SKIP, "unreadable_state", f"an environment of {tenant} has unreadable state", tenant, config.source)
            continue
        held: set[str] = set()
        for state in states:
            held |= state.held
        snapshots.sort(key=lambda item: item[0], reverse=True)
        for index, (version, snapshot) in enumerate(snapshots):
            if index < settings.source_snapshots_kept:
                out.kept["source_snapshot_newest"] += 1
            elif version.value in held:
                out.kept["source_snapshot_held"] += 1
            elif snapshot.status != "available":
                out.kept["source_snapshot_not_available"] += 1
            elif not config.source.owns(snapshot.tags):
                out.add(
                    SKIP,
                    "not_managed",
                    "source snapshot not created by tierlift",
                    snapshot.id,
                    config.source,
                    version.value,
                )
            else:
                detail = f"source snapshot beyond the newest {settings.source_snapshots_kept}, held by no environment"
                out.add(DELETE_SNAPSHOT, "source_snapshot_unused", detail, snapshot.id, config.source, version.value)


def _plan_encrypted_copy(facts: Facts, settings: Settings, snapshot: SnapshotFact, out: Plan) -> None:
    """The encrypted copy of an unencrypted source snapshot goes once its namespace holds its version no
    more (not active, not in flight, not queued) and it is past the grace period; only with the tierlift
    tags of the namespace and version its name says."""
    try:
        parsed = Versioned.parse_encrypted_copy(snapshot.id)
    except InvalidName:
        if _in_scope(facts, snapshot.tags.get(TENANT_TAG)):
            out.add(SKIP, "not_managed", "an encrypted copy not named by tierlift", snapshot.id)
        return
    ns, version = parsed.namespace, parsed.version.value
    if not _in_scope(facts, ns.tenant.name):
        return
    state = facts.namespaces.get(ns.name) or NamespaceState(ns)
    problem = tenant_problem(facts, ns.tenant.name)
    if not ns.owns(snapshot.tags) or snapshot.tags.get(VERSION_TAG) != version:
        out.add(SKIP, "not_managed", f"no tierlift tags of {ns} version {version}", snapshot.id, ns, version)
    elif state.problems:
        out.add(SKIP, "unreadable_state", "; ".join(state.problems), snapshot.id, ns, version)
    elif problem:
        out.add(SKIP, "unknown_tenant", problem, snapshot.id, ns, version)
    elif version in state.held:
        out.kept["encrypted_copy_held"] += 1
    elif snapshot.status != "available" and snapshot.status not in COPY_FAILED:
        out.kept["encrypted_copy_not_available"] += 1
    elif snapshot.created is not None and _age(facts.now, snapshot.created) < settings.grace_seconds:
        out.kept["encrypted_copy_grace"] += 1
    else:
        detail = f"encrypted copy ({snapshot.status}) of a version {ns} holds no more"
        out.add(DELETE_SNAPSHOT, "encrypted_copy_unused", detail, snapshot.id, ns, version)


def _plan_final_snapshot(facts: Facts, snapshot: SnapshotFact, retention: int, out: Plan) -> None:
    owner = _snapshot_namespace(snapshot.tags)
    if owner is None or not owner[0].owns(snapshot.tags):
        if _in_scope(facts, snapshot.tags.get(TENANT_TAG)):
            out.add(SKIP, "not_managed", "final snapshot without tierlift's tags", snapshot.id)
        return
    ns, version = owner
    if not _in_scope(facts, ns.tenant.name):
        return
    state = facts.namespaces.get(ns.name) or NamespaceState(ns)
    problem = tenant_problem(facts, ns.tenant.name)
    if state.problems:
        out.add(SKIP, "unreadable_state", "; ".join(state.problems), snapshot.id, ns, version.value)
    elif problem:
        out.add(SKIP, "unknown_tenant", problem, snapshot.id, ns, version.value)
    elif version.value in state.held:
        out.add(SKIP, "held", "final snapshot of a version the environment still holds", snapshot.id, ns, version.value)
    elif snapshot.created is None or snapshot.status != "available":
        out.kept["final_snapshot_not_available"] += 1
    elif _age(facts.now, snapshot.created) <= retention:
        out.kept["final_snapshot_retained"] += 1
    else:
        age = _age(facts.now, snapshot.created)
        detail = f"final snapshot {age / 86400:.1f} days old, retention {retention // 86400} days"
        out.add(DELETE_SNAPSHOT, "final_snapshot_expired", detail, snapshot.id, ns, version.value)


def lost_snapshot_requests(facts: Facts, settings: Settings, history: frozenset[str] | None = None) -> list[Planned]:
    """``Promotion Requested`` the snapshot event would have caused, for snapshots whose event was lost.

    Per tenant, the newest available source snapshot older than the ``requested`` timeout, for each
    automatic environment whose active version is older and for which nothing shows a request was
    ever made: no promotion in flight or queued for it, no stack of it (live, or deleted recently per
    ``history``), no earlier sweep request (the snapshot's :data:`SWEEP_REQUESTED_TAG`).
    """
    history = facts.deleted_stacks if history is None else history
    history = history or frozenset()
    live = _live_stack_names(facts)
    wait = stage_timeout(settings, "requested")
    newest: dict[str, tuple[Version, SnapshotFact, TenantConfig]] = {}
    for snapshot in facts.snapshots:
        found = source_snapshot_of(snapshot, facts.tenants)
        if found is None or snapshot.status != "available" or snapshot.created is None:
            continue
        config, version = found
        if not _in_scope(facts, config.tenant.name) or _age(facts.now, snapshot.created) < wait:
            continue
        current = newest.get(config.tenant.name)
        if current is None or version > current[0]:
            newest[config.tenant.name] = (version, snapshot, config)
    requests: list[Planned] = []
    for version, snapshot, config in newest.values():
        already = set(snapshot.tags.get(SWEEP_REQUESTED_TAG, "").split())
        for env in config.automatic:
            ns = config.namespace(env)
            state = facts.namespaces.get(ns.name) or NamespaceState(ns)
            if state.problems or env in already:
                continue
            if state.active is not None and state.active >= version:
                continue
            promotion = state.promotion
            if promotion is not None and promotion.version >= version:
                continue
            if any(q.version is None or q.version >= version.value for q in state.queued):
                continue
            if ns.stack_name(version) in live or ns.stack_name(version) in history:
                continue
            detail = f"{snapshot.id} is newer than {env}'s active ({state.active or 'none'}) and was never promoted"
            requests.append(
                Planned(
                    REQUEST_PROMOTION, "lost_snapshot_event", detail, snapshot.id, ns.tenant.name, env, version.value
                )
            )
    return requests


def counts(items: list[Planned], kept: Counter[str] | None = None) -> dict[str, dict[str, int]]:
    """Counts by kind and reason: ``{"delete_stack": {"orphan": 2}, "keep": {"active": 10}}``."""
    out: dict[str, dict[str, int]] = {}
    for item in items:
        by_reason = out.setdefault(item.kind, {})
        by_reason[item.reason] = by_reason.get(item.reason, 0) + 1
    if kept:
        out["keep"] = dict(sorted(kept.items()))
    return out


def snapshot_tag_value(tags: dict[str, str], environment: str) -> str:
    """The :data:`SWEEP_REQUESTED_TAG` value once ``environment`` is added."""
    envs = set(tags.get(SWEEP_REQUESTED_TAG, "").split()) | {environment}
    return " ".join(sorted(envs))


__all__ = [
    "ACTING_KINDS",
    "Facts",
    "FindingKind",
    "NamespaceState",
    "Plan",
    "Planned",
    "SnapshotFact",
    "StackFact",
    "TenantState",
    "counts",
    "leftovers_of",
    "lost_snapshot_requests",
    "mark_parked",
    "parse_parameters",
    "plan",
]
