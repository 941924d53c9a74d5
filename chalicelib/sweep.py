"""The scheduled sweep: orphaned DB stacks, stuck promotions, snapshot retention, quota headroom.

One code path for the Chalice schedule (:func:`on_schedule`) and the operator CLI (:func:`run_sweep`):

1. **gather** everything in bulk: one recursive ``get_parameters_by_path`` walk of the SSM root,
   paginated ``describe_stacks`` and ``describe_db_snapshots`` (tags come with both);
2. **plan** with the pure :func:`chalicelib.sweep_plan.plan`;
3. **observe** each stuck promotion (the only per-namespace describes, and only when something is
   stuck) and pick the same function the event handler would have called;
4. **carry out** the plan through the existing adapters and :mod:`chalicelib.promotion` functions,
   each of which re-checks its own safety rules (defence in depth). A dry run stops before this step.

Every action, refusal and report lands in one :class:`SweepResult`, logged as one structured record.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from chalicelib import events as ev
from chalicelib import promotion as promo
from chalicelib.aws import OutboundEvent, PutEventsFailed
from chalicelib.config import InvalidConfig
from chalicelib.cutover import start
from chalicelib.decisions import CREATE_FAILED_STATES, CREATE_OK, CREATE_PENDING_STATES
from chalicelib.deps import Deps
from chalicelib.ecs_spec import PromotionError
from chalicelib.endings import delete_stack, end
from chalicelib.names import InvalidName, Namespace, Tenant, Version, Versioned
from chalicelib.requests import drain
from chalicelib.state import Outcome, Promotion, Stage, UnknownTenant
from chalicelib.sweep_plan import (
    DELETE_DB_RECORD,
    DELETE_LOGS,
    DELETE_SNAPSHOT,
    DELETE_STACK,
    DRAIN_QUEUE,
    RECONCILE,
    REPORT,
    REQUEST_PROMOTION,
    SKIP,
    SWEEP_REQUESTED_TAG,
    Facts,
    Plan,
    Planned,
    SnapshotFact,
    StackFact,
    counts,
    lost_snapshot_requests,
    parse_parameters,
    plan,
    snapshot_tag_value,
    source_snapshot_of,
)

logger = logging.getLogger(__name__)

QUOTAS = ("DBInstances", "ManualSnapshots")
LOG_ACTIONS_LIMIT = 100
# Order of execution: settle stuck promotions first (they may end, moving versions and locks), then
# delete, then request promotions for lost snapshot events.
ORDER = (RECONCILE, DRAIN_QUEUE, DELETE_STACK, DELETE_DB_RECORD, DELETE_SNAPSHOT, REQUEST_PROMOTION, DELETE_LOGS)


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
    seconds: float = 0.0
    # Wall time of each phase: gather (bulk reads), plan (pure), act (observe, reconcile, delete).
    timings: dict[str, float] = field(default_factory=dict)

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
            "namespaces": self.namespaces,
            "stacks": self.stacks,
            "snapshots": self.snapshots,
            "counts": self.counts,
            "statuses": self.status_counts,
            "headroom": self.headroom,
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
    result.headroom = headroom(deps)
    for entry in result.entries:
        if entry.item.kind == RECONCILE:
            _safely(result, entry, lambda e: _reconcile(deps, e, dry_run=dry_run))
        elif not dry_run and entry.item.kind in ORDER:
            _safely(result, entry, lambda e: _execute(deps, facts, e))
    if not dry_run:
        _put_events(deps, result)
        promo.admit_waiting(deps)
    done = time.monotonic()
    result.seconds = done - started
    result.timings = {"gather": gathered - started, "plan": planned - gathered, "act": done - planned}
    return result


def _initial_status(item: Planned) -> str:
    return {SKIP: "skipped", REPORT: "reported"}.get(item.kind, "planned")


def _ordered(the_plan: Plan) -> list[Planned]:
    rank = {kind: i for i, kind in enumerate(ORDER)}
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
        InvalidName,
        InvalidConfig,
        UnknownTenant,
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
    """Read the world in bulk: SSM under the root (or the tenant), all stacks, all manual snapshots."""
    root = deps.store.root
    params = deps.store.get_by_path(f"{root}/{tenant}" if tenant else root)
    tenants, namespaces = parse_parameters(root, params)
    stacks = [StackFact.from_api(s) for s in deps.stacks.all()]
    snapshots = [SnapshotFact.from_api(s) for s in deps.rds.snapshots()]
    return Facts(
        now=deps.clock(),
        tenants=tenants,
        namespaces=namespaces,
        stacks=stacks,
        snapshots=snapshots,
        tenant_filter=tenant,
    )


def deleted_stack_names(deps: Deps) -> frozenset[str]:
    """Names of stacks deleted in the last ~90 days (CloudFormation's ``list_stacks`` keeps them)."""
    names: set[str] = set()
    paginator = deps.stacks.client.get_paginator("list_stacks")
    for page in paginator.paginate(StackStatusFilter=["DELETE_COMPLETE"]):
        names.update(s["StackName"] for s in page.get("StackSummaries", []))
    return frozenset(names)


def headroom(deps: Deps) -> dict[str, Any]:
    """Used, max and free DB instances and manual snapshots, from RDS's account attributes.

    ``{"status": "unknown", "reason": ...}`` when they cannot be read (moto does not implement
    ``DescribeAccountAttributes``; an IAM policy may not allow it): the sweep goes on regardless.
    """
    try:
        quotas = deps.rds.client.describe_account_attributes().get("AccountQuotas", [])
    except NotImplementedError as exc:
        return {"status": "unknown", "reason": f"not implemented by this endpoint: {exc}"[:300]}
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        # ResponseParserError (an endpoint answering with HTML) is not a BotoCoreError subclass.
        return {"status": "unknown", "reason": f"{type(exc).__name__}: {exc}"[:300]}
    out: dict[str, Any] = {"status": "ok"}
    for quota in quotas:
        name = quota.get("AccountQuotaName")
        if name in QUOTAS:
            used, most = int(quota.get("Used", 0)), int(quota.get("Max", 0))
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
        versioned = Versioned(ns, Version.parse(entry.item.version))
        # The handler's own path for "stack deleted": it re-checks active, in flight and the stack.
        outcome = promo.apply_stack_status(deps, versioned, "DELETE_COMPLETE", "swept: no stack")
        _settle(entry, outcome.action == "forget_db", outcome.reason)
    elif kind == DELETE_SNAPSHOT:
        _delete_snapshot(deps, facts, entry)
    elif kind == DRAIN_QUEUE:
        drained = drain(deps, _ns(entry))
        _settle(entry, drained is not None, drained.action if drained else "queue already empty or busy")
    elif kind == REQUEST_PROMOTION:
        _request_promotion(deps, facts, entry)
    elif kind == DELETE_LOGS:
        ns = _ns(entry)
        state = facts.namespaces.get(ns.name)
        log = state.ended.get(entry.item.target) if state else None
        current = deps.store.get_promotion(ns)
        if log is None or (current is not None and current.id == entry.item.target):
            _settle(entry, False, "the request is in flight again")
            return
        deps.store.delete_log(ns, log)
        _settle(entry, True, f"{len(log.steps)} log entries deleted")


def _settle(entry: Entry, done: bool, outcome: str) -> None:
    entry.status = "done" if done else "refused"
    entry.outcome = outcome


def _delete_stack(deps: Deps, entry: Entry) -> None:
    ns, version = _ns(entry), Version.parse(entry.item.version)
    in_flight = deps.store.get_promotion(ns)
    if in_flight is not None and version in (in_flight.version, in_flight.previous):
        _settle(entry, False, f"now a version of promotion {in_flight.id}")
        return
    # delete_stack re-checks active, tags, version tag and termination protection.
    active = deps.store.get_active(ns)
    deleted = delete_stack(deps, ns, version, f"sweep: {entry.item.detail}", active=active)
    _settle(entry, deleted, "delete requested" if deleted else "refused by delete_stack (see log)")


def _delete_snapshot(deps: Deps, facts: Facts, entry: Entry) -> None:
    if entry.item.reason == "source_snapshot_unused":
        ns = _ns(entry)
        state = facts.tenants.get(ns.tenant.name)
        config = state.config if state else None
        for env in config.targets if config else ():
            in_flight = deps.store.get_promotion(config.namespace(env)) if config else None
            held = {v.value for v in (in_flight.version, in_flight.previous) if v} if in_flight else set()
            if in_flight is not None and entry.item.version in held:
                _settle(entry, False, f"now held by promotion {in_flight.id}")
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
        deps.rds.client.add_tags_to_resource(
            ResourceName=snapshot.arn, Tags=[{"Key": SWEEP_REQUESTED_TAG, "Value": value}]
        )
        snapshot.tags[SWEEP_REQUESTED_TAG] = value  # the next environment's request adds to it
    _settle(entry, True, "Promotion Requested put")


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
def _reconcile(deps: Deps, entry: Entry, *, dry_run: bool) -> None:
    ns = _ns(entry)
    promotion = deps.store.get_promotion(ns)
    if promotion is None or promotion.id != entry.item.target:
        _settle(entry, False, "promotion already ended")
        return
    outcome = reconcile(deps, promotion, dry_run=dry_run)
    if dry_run:
        entry.outcome = outcome
    else:
        entry.status = "waiting" if outcome.startswith("wait") else "done"
        entry.outcome = outcome


def reconcile(deps: Deps, promotion: Promotion, *, dry_run: bool = False) -> str:
    """Move a stuck promotion on as its lost event would have; returns what was (or would be) done."""
    stage = promotion.stage
    if promotion.ending is not None:
        if dry_run:
            return f"would resume: {stage}"
        outcome = promo.resume(deps, promotion)
        if outcome is not None and outcome.action == "ignore":
            return f"wait: {outcome.reason}"  # a live claim: its owner is still at work
        return f"resume: {outcome.action if outcome else 'nothing'}"
    if stage is Stage.AWAITING_APPROVAL:
        if dry_run:
            return "would cancel: approval timed out"
        return f"approval expired: {promo.cancel_expired_approval(deps, promotion).action}"
    if stage is Stage.REQUESTED:
        if dry_run:
            return "would re-run the start (create or adopt its stack)"
        rec = deps.store.recorded(promotion.namespace, with_queue=False)
        if rec.promotion is None or rec.promotion.id != promotion.id:
            return "promotion already moved on"
        try:
            config = rec.config()
            outcome = start(deps, config, rec, rec.promotion)
        except (UnknownTenant, InvalidConfig) as exc:
            outcome = end(deps, rec, rec.promotion, Outcome.FAILED, f"the request cannot resume: {exc}")
            drain(deps, promotion.namespace)
        if outcome.action != "start":
            return f"request: {outcome.action} {outcome.reason}".strip()
        current = deps.store.get_promotion(promotion.namespace)
        if current is None or current.id != promotion.id:
            return f"request: {outcome.action}"
        promotion, stage = current, current.stage
    if stage is Stage.RESTORING or (stage is Stage.DEPLOYING and promotion.deployment_id is None):
        return _reconcile_stack(deps, promotion, dry_run=dry_run)
    if stage is Stage.DEPLOYING:
        return _reconcile_deployment(deps, promotion, dry_run=dry_run)
    return f"wait: stage {stage} has no reconciliation"


def _reconcile_stack(deps: Deps, promotion: Promotion, *, dry_run: bool) -> str:
    versioned = Versioned(promotion.namespace, promotion.version)
    stack = deps.stacks.describe(versioned.stack_name)
    status = stack.get("StackStatus", "") if stack else "DELETE_COMPLETE"
    if status in CREATE_PENDING_STATES:
        return f"wait: stack {versioned.stack_name} is {status}"
    if status == CREATE_OK or status in CREATE_FAILED_STATES:
        if dry_run:
            return f"would apply stack status {status}"
        outcome = promo.apply_stack_status(deps, versioned, status, "observed by the sweep")
        return f"stack {status}: {outcome.action}"
    reason = f"database stack {versioned.stack_name} is {status}, it will not become usable"
    if dry_run:
        return f"would fail: {reason}"
    rec = deps.store.recorded(promotion.namespace, with_queue=False)
    if rec.promotion is None or rec.promotion.id != promotion.id:
        return "promotion already moved on"
    failed = end(deps, rec, rec.promotion, Outcome.FAILED, reason)
    drain(deps, promotion.namespace)
    return f"stack {status}: {failed.action}"


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
    target = deps.store.get_config(ns.tenant).target(ns.environment)
    service = deps.services.describe_service(target.cluster, target.service)
    outcome, why = deployment_outcome(service, promotion)
    if outcome == "IN_PROGRESS":
        return f"wait: {why}"
    if dry_run:
        return f"would apply deployment outcome {outcome}: {why}"
    done = promo.apply_deployment_outcome(deps, ns, promotion.deployment_id, outcome, why)
    return f"deployment {outcome}: {done.action}"


__all__ = ["SweepResult", "deployment_outcome", "gather", "headroom", "on_schedule", "reconcile", "run_sweep"]
