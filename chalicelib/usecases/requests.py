"""Requests: ``Promotion Requested`` in, and the queue of requests waiting for a busy environment.

A request is checked before anything is written: **bad input** (see :data:`BAD_INPUT`) is rejected
without writing anything. Every other decision about a request is made by whoever holds the
environment's lock, so it is made once:

* the environment is free: the request takes the lock (create-only), reads again (the read that makes a
  decision on an older read harmless) and then, under the lock, either starts or is **refused by the
  state** (already active, nothing to promote yet, not completed before, snapshot not available,
  superseded by a newer request that ran): the refusal is the promotion's ending (``rejected``), so a
  re-delivery finds the request among the answered ones;
* the environment is busy: the request waits in ``queue/<id>`` (create-only: of two deliveries one
  queues it). It is answered when the environment frees, by the **drain**: the newest waiting request
  (by its own request time; requests of the same time in the order they were queued) takes the lock;
  the older ones are rejected as superseded, queued requests an operator cancelled are cancelled, and
  the one that took the lock is started or refused as above.

A delivery that finds the request in flight, queued or answered is a duplicate and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from chalicelib.adapters.state import TenantRecord
from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.cells import CellRefused
from chalicelib.domain.config import InvalidConfig, Target, TenantConfig
from chalicelib.domain.decisions import Action, ClaimVerdict, decide_request, superseded_by
from chalicelib.domain.ecs_spec import PromotionError
from chalicelib.domain.images import by_digest
from chalicelib.domain.model import (
    DeployEntry,
    EnvRecord,
    Outcome,
    Promotion,
    QueuedRequest,
    Request,
    StateFull,
    UnknownTenant,
)
from chalicelib.domain.names import InvalidName, Namespace, Version, Versioned
from chalicelib.domain.records import NamedTuple
from chalicelib.invocation import current_id
from chalicelib.observability import metrics
from chalicelib.usecases.cells import of_config
from chalicelib.usecases.cutover import start
from chalicelib.usecases.endings import end
from chalicelib.usecases.transitions import Result, event_for, give_back, ignore, lease_until, lock_verdict, now_text

logger = logging.getLogger(__name__)

DRAIN_ROUNDS = 8
# The key an unencrypted source snapshot's copy is encrypted with when the target names none.
AWS_MANAGED_RDS_KEY = "alias/aws/rds"
ENGINE_CACHE_SECONDS = 3600.0
_engine_memo: dict[tuple[str, str, str], tuple[float, bool]] = {}


class BadRequest(PromotionError):
    """The request itself is refused, whatever the state: a version with no source snapshot, a snapshot
    of another DB, an image or account the target's policy does not allow. Bad input: nothing written."""


# Bad input: no such tenant or environment, an unreadable config, an impossible version, a refused
# policy. Rejected without writing anything (bad input changes nothing); a re-delivery is answered again.
# A cell whose role refuses tierlift is bad input too: the request cannot be carried out there, and the
# cell's state (and every other cell's) is left as it was.
BAD_INPUT = (UnknownTenant, InvalidConfig, InvalidName, BadRequest, CellRefused)


# --------------------------------------------------------------------------------------------------
# Rejections of bad input (nothing written)
# --------------------------------------------------------------------------------------------------
def reject_input(deps: Deps, raw: Any, reason: str) -> Result:
    """``Promotion Rejected`` for a request that could not be read: the only AWS call it causes."""
    detail = raw.get("detail") if isinstance(raw, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    request_id = ev.request_id_of(raw)
    # Only what the request carried as text: a missing or non-string field is left out, never rendered
    # ("None", "146", "['qa']" would read as a name the sender never gave).
    fields = {
        key: ev.safe(detail[key]) for key in ("tenant", "environment", "version") if isinstance(detail.get(key), str)
    }
    return reject_fields(deps, request_id, reason, fields)


def reject_request(deps: Deps, request: ev.PromotionRequest, reason: str) -> Result:
    """``Promotion Rejected`` for a readable request that is bad input."""
    fields = {"tenant": request.tenant.name, "environment": request.environment}
    if request.version is not None:
        fields["version"] = request.version.value
    return reject_fields(deps, request.id, reason, fields)


def reject_fields(
    deps: Deps, request_id: str, reason: str, fields: dict[str, str], *, refused: tuple[str, str] | None = None
) -> Result:
    """Put ``Promotion Rejected`` with only the fields the request carried (none invented). ``refused``:
    (the command, the promotion it targeted) when the rejection answers an operator's command."""
    logger.warning("promotion rejected: %s", reason, extra={"reason": reason})
    deps.bus.put(
        [
            ev.outbound(
                ev.PROMOTION_REJECTED,
                tenant=fields.get("tenant"),
                environment=fields.get("environment"),
                promotion_id=request_id,
                version=fields.get("version"),
                reason=reason,
                outcome=Outcome.REJECTED.value,
                refused_command=refused[0] if refused else None,
                target_promotion_id=refused[1] if refused else None,
            )
        ]
    )
    metrics.promotion_rejected(None, None)
    return Result("reject", reason, request_id)


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------
class Checked(NamedTuple):
    """A request as checked: the config, the request with its version resolved and the target's
    settings and source snapshot filled in, and the state's refusal (None: it may start)."""

    config: TenantConfig
    request: Request
    refusal: str | None


def _snapshot(deps: Deps, cache: dict[str, Any], snapshot_id: str) -> dict[str, Any] | None:
    if snapshot_id not in cache:
        cache[snapshot_id] = deps.rds.describe_snapshot(snapshot_id)
    return cache[snapshot_id]  # type: ignore[no-any-return]


def _engine_offered(deps: Deps, engine: str, version: str) -> bool:
    """RDS's answer, kept per container for :data:`ENGINE_CACHE_SECONDS` (a region retires a version
    months after announcing it): a warm container's promotions of one version ask once."""
    region = deps.rds.region  # a cell's own
    memo = _engine_memo.get((region, engine, version))
    if memo is not None and time.monotonic() - memo[0] < ENGINE_CACHE_SECONDS:
        return memo[1]
    offered = deps.rds.engine_offered(engine, version)
    _engine_memo[(region, engine, version)] = (time.monotonic(), offered)
    return offered


def forget_engine_versions() -> None:
    """Drop the container's memo of offered engine versions (tests, benches)."""
    _engine_memo.clear()


def _offered_engine_version(
    deps: Deps, cache: dict[str, Any], snapshot_id: str, snapshot: dict[str, Any], config: TenantConfig
) -> str | None:
    """The source snapshot's engine version, once RDS is known to offer it in the region (one
    ``DescribeDBEngineVersions`` per invocation and version, kept in ``cache``). A retired version cannot be
    restored: bad input, rejected before anything is written or created."""
    engine, version = snapshot.get("Engine"), snapshot.get("EngineVersion")
    if not isinstance(engine, str) or not isinstance(version, str) or not engine or not version:
        return None  # RDS always says; without it the stack restores the snapshot's own version
    key = f"engine:{engine}:{version}"
    if key not in cache:
        cache[key] = _engine_offered(deps, engine, version)
    if not cache[key]:
        raise BadRequest(
            f"source snapshot {snapshot_id} is {engine} {version}, which RDS no longer offers in this region: "
            f"upgrade the source DB {config.source_db_instance} to an offered version (aws rds "
            f"describe-db-engine-versions --engine {engine}), take a new snapshot (tierlift snapshot "
            f"{config.tenant} --wait) and promote that"
        )
    return version


def _newest_source_version(deps: Deps, cache: dict[str, Any], config: TenantConfig) -> Version | None:
    key = "newest:" + config.source_db_instance
    if key not in cache:
        newest = None
        for snapshot in deps.rds.snapshots(instance_id=config.source_db_instance):
            try:
                parsed = Versioned.parse_snapshot(snapshot.get("DBSnapshotIdentifier"))
            except InvalidName:
                continue
            if parsed.namespace != config.source or snapshot.get("Status") != "available":
                continue
            cache[parsed.snapshot_id] = snapshot
            if newest is None or parsed.version > newest:
                newest = parsed.version
        cache[key] = newest
    return cache[key]  # type: ignore[no-any-return]


def check(deps: Deps, tenant: TenantRecord, request: Request, account: str | None, cache: dict[str, Any]) -> Checked:
    """Config, target, version, policy and source snapshot of a request, against what ``tenant`` holds.

    Raises one of :data:`BAD_INPUT` for bad input; returns the state's refusal otherwise. AWS answers
    are kept in ``cache``, so checking again under the lock (against a fresh read) costs no call.
    """
    if tenant.config_text is None:
        raise UnknownTenant(
            f"tenant {tenant.tenant} has no config at {tenant.config_path}: register it (tierlift tenant register FILE)"
        )
    config = tenant.env(request.environment).config()
    target = config.target(request.environment)
    policy = target.policy
    request = request._replace(cell=config.cell.as_dict() if config.cell is not None else None)
    if request.redeploy is not None:
        return _check_redeploy(tenant, request, config)
    if policy.accounts and account is not None and account not in policy.accounts:
        raise BadRequest(f"events from account {account} may not promote into {request.environment}")
    deps = of_config(deps, config)  # the source snapshots are in the tenant's cell
    if policy.two_person and request.principal is None:
        raise BadRequest(
            f"promotions into {request.environment} must be signed (its two-person rule compares who asked with "
            "who approves): send it with tierlift promote, which signs it through tierlift's API"
        )
    if request.image and policy.allowed_images and not request.image.startswith(policy.allowed_images):
        raise BadRequest(f"image {request.image} is not from an allowed repository of {request.environment}")
    before = config.environment_before(request.environment)
    refusal: str | None = None
    version: Version | None = Version.parse(request.version) if request.version else None
    if version is None and before == config.source_environment:
        version = _newest_source_version(deps, cache, config)
        if version is None:
            refusal = (
                f"no available source snapshot of {config.source_db_instance}: "
                f"take one with tierlift snapshot {config.tenant} --wait, then request again"
            )
    elif version is None:
        version = tenant.env(before).active
        if version is None:
            refusal = (
                f"environment {before} (before {request.environment}) has no active version to promote: promote "
                f"one there first (tierlift promote {config.tenant} {before}) or name one with --version VERSION"
            )
    resolved = request._replace(
        version=version.value if version else None,
        target=config.target_spec(request.environment),
        snapshot=config.source.snapshot_id(version) if version else None,
    )
    if version is None:
        return Checked(config, resolved, refusal)
    snapshot_id = config.source.snapshot_id(version)
    snapshot = _snapshot(deps, cache, snapshot_id)
    if snapshot is None:
        raise BadRequest(
            f"source snapshot {snapshot_id} does not exist: name a version that has one (--version VERSION), "
            f"or take one with tierlift snapshot {config.tenant}"
        )
    if snapshot.get("DBInstanceIdentifier") != config.source_db_instance:
        owner = snapshot.get("DBInstanceIdentifier")
        raise BadRequest(f"snapshot {snapshot_id} is of {owner}, not the source DB {config.source_db_instance}")
    resolved = resolved._replace(
        engine_version=_offered_engine_version(deps, cache, snapshot_id, snapshot, config),
        # An unencrypted source snapshot is copied, encrypted with the target's key, before the restore.
        encrypt_with=None if snapshot.get("Encrypted") else (target.db.kms_key_id or AWS_MANAGED_RDS_KEY),
    )
    must_have_completed = policy.require_completed_before and before != config.source_environment
    if request.override is not None:
        _check_override(request, policy.override_by, policy.override_allowed(request.principal))
    elif must_have_completed and version.value not in tenant.env(before).completed:
        refusal = (
            f"version {version} has not completed in {before}; promote it there first "
            f"(tierlift promote {config.tenant} {before} --version {version})"
        )
    elif must_have_completed:
        proven = _proven_image(tenant.env(before).state.image_of(version.value), request, before, target)
        resolved = resolved._replace(image=proven)
    if refusal is None and snapshot.get("Status") != "available":
        refusal = (
            f"source snapshot {snapshot_id} is {snapshot.get('Status')}, not available yet: request again once "
            f"it is (tierlift snapshot {config.tenant} --wait waits for a new one)"
        )
    return Checked(config, resolved, refusal)


def _check_redeploy(tenant: TenantRecord, request: Request, config: TenantConfig) -> Checked:
    """A redeploy (the pipeline's own, for a rotated secret) rolls the service onto its task definition
    again: only while the version whose secret rotated is still the active one."""
    env = request.environment
    active = tenant.env(env).active
    resolved = request._replace(target=config.target_spec(env), snapshot=None)
    refusal = None
    if active is None or request.version != active.value:
        refusal = (
            f"{request.redeploy}: version {request.version} is no longer active in {env} "
            f"({active or 'none'}); its tasks are gone, nothing to redeploy"
        )
    return Checked(config, resolved, refusal)


def _check_override(request: Request, named: tuple[str, ...], allowed: bool) -> None:
    """``override`` (skip the earlier environment, run another image) only from a principal the target's
    policy names in ``override_by``, signed (tierlift's API); it then waits for approval like a cutover."""
    if allowed:
        return
    env = request.environment
    if request.principal is None:
        raise BadRequest(
            f"override into {env} refused: an override must be signed (tierlift promote ... --override REASON "
            "sends it through tierlift's API); one sent on the bus is never trusted"
        )
    if not named:
        raise BadRequest(f"override into {env} refused: its policy names nobody in override_by")
    raise BadRequest(f"override into {env} refused: {request.principal} is not named in its override_by")


def _proven_image(proven: str | None, request: Request, before: str, target: Target) -> str | None:
    """What ``target`` receives: the image that completed in ``before``, as recorded there. An environment
    under approval takes it only by digest; no request can name another image (only a signed override)."""
    env = target.environment
    if proven is None or (target.approval_required and not by_digest(proven)):
        if target.approval_required:
            raise BadRequest(
                f"{request.version} completed in {before} with no image digest recorded ({proven or 'none'}); "
                f"{env} receives only an image by digest: promote it in {before} again with an image from a "
                "private ECR repository"
            )
        return request.image
    if request.image is not None and request.image != proven:
        raise BadRequest(
            f"{env} receives the image that completed in {before} ({proven}); a request cannot replace it "
            f"(promote the new image in {before} first, or a signed --override REASON from an override_by principal)"
        )
    return proven


# --------------------------------------------------------------------------------------------------
# Promotion Requested
# --------------------------------------------------------------------------------------------------
def on_promotion_requested(deps: Deps, command: ev.PromotionRequest) -> Result:
    ns = command.tenant.namespace(command.environment)
    request = Request(
        id=command.id,
        tenant=command.tenant.name,
        environment=command.environment,
        version=command.version.value if command.version else None,
        requested_by=command.requested_by,
        image=command.image,
        requested_at=command.time or now_text(deps),
        override=command.override,
        principal=command.principal,
        redeploy=command.redeploy,
    )
    cache: dict[str, Any] = {}
    for _ in range(3):
        tenant = deps.store.read_tenant(command.tenant)
        rec = tenant.env(command.environment)
        known = rec.knows(request.id)
        if known:
            resumed = resume_own(deps, rec, command.account)
            if resumed is not None and rec.promotion is not None and rec.promotion.id == request.id:
                return resumed
            return ignore(f"duplicate delivery: {known}", ns.name, request.id, expected=True)
        try:
            checked = check(deps, tenant, request, command.account, cache)
        except BAD_INPUT as exc:
            return reject_request(deps, command, str(exc))
        if rec.retaken is not None:
            if release_retaken(deps, rec).action == "release":
                continue
            return enqueue(deps, ns, request, f"the lock is held by {rec.retaken.id}, a request that had ended")
        if rec.promotion is not None:
            promotion = rec.promotion
            return enqueue(deps, ns, request, f"environment busy with promotion {promotion.id} ({promotion.stage})")
        lock = _lock_for(deps, rec, checked.request)
        try:
            taken = deps.store.take_lock(lock)
        except StateFull as exc:
            return reject_request(deps, command, str(exc))
        if not taken:
            return enqueue(deps, ns, request, "environment became busy")
        outcome = run_locked(deps, lock, command.account, cache, seen=rec)
        if outcome is not None:
            return outcome
    return ignore(f"the state of {ns} kept changing; the sweep retries", ns.name, request.id)


def _lock_for(
    deps: Deps,
    rec: EnvRecord,
    request: Request,
    *,
    superseded: tuple[str, ...] = (),
    cancelled: tuple[str, ...] = (),
    folded: tuple[str, ...] = (),
) -> Request:
    active = rec.active
    return request._replace(
        previous=active.value if active else None,
        started=now_text(deps),
        owner=current_id(),
        lease_until=lease_until(deps),
        superseded=superseded,
        cancelled=cancelled,
        folded=folded,
    )


def resume_own(deps: Deps, rec: EnvRecord, account: str | None = None) -> Result | None:
    """Finish what a crashed attempt of *this* invocation left (Lambda retries with the same request id):
    a start cut short or an ending it claimed under the lock, a drain cut short after the lock's release.
    None: nothing to finish."""
    promotion = rec.promotion
    if promotion is None:
        # Idle with requests waiting: a drain cut short (the ending released the lock, then died).
        return drain(deps, rec.namespace) if rec.waiting else None
    me = current_id()
    if promotion.ending is not None and promotion.ending.owner == me:
        return drain_after(deps, rec.namespace, end(deps, rec, promotion, Outcome(promotion.ending.outcome)))
    if _start_cut_short(deps, promotion):
        resumed = run_locked(deps, promotion.request, account, {})
        return resumed or ignore(f"the state of {rec.namespace} moved on", rec.namespace.name, promotion.id)
    return None


def _start_cut_short(deps: Deps, promotion: Promotion) -> bool:
    """The lock is held by this promotion, nothing followed, and this invocation is a retry of the one
    that took it (a crash before or while starting): start it again (starting is idempotent). Once the
    lock's lease ran out, the sweep does the same for a promotion whose stack never appeared."""
    verdict = lock_verdict(deps, promotion.request)
    return (
        not promotion.deploys
        and promotion.ending is None
        and verdict is ClaimVerdict.TAKE_OVER
        and promotion.request.owner == current_id()
    )


def run_locked(
    deps: Deps, lock: Request, account: str | None, cache: dict[str, Any], *, seen: EnvRecord | None = None
) -> Result | None:
    """This invocation holds (or resumes) the lock for ``lock``: read again, answer the queued requests the
    lock names, then start the request or refuse it.

    ``seen``: the read the lock was taken on. If the state moved on since (a promotion ran in between),
    the lock's facts may be stale: it is given back and None returned (the caller decides again).
    """
    ns = lock.namespace
    tenant = deps.store.read_tenant(ns.tenant)
    rec = tenant.env(ns.environment)
    promotion = rec.promotion
    if promotion is None or promotion.id != lock.id:
        if rec.retaken is not None and rec.retaken.id == lock.id and rec.retaken.owner == current_id():
            # Taken a moment ago by this invocation, after the request had ended in between.
            give_back(deps, lock, f"request {lock.id} had ended before the lock was taken")
            return None
        return ignore(f"lock of {ns} is no longer {lock.id}'s", ns.name, lock.id)
    if seen is not None and (rec.state.seq != seen.state.seq or rec.state.has_answered(lock.id)):
        give_back(deps, lock, "the environment's state moved on since it was read")
        return None
    _answer_queued(deps, rec, lock)
    if lock.cancelled and lock.id in lock.cancelled:
        return end(deps, rec, promotion, Outcome.CANCELLED, rec.cancels.get(lock.id) or "cancelled while queued")
    try:
        checked = check(deps, tenant, lock, account, cache)
    except BAD_INPUT as exc:
        return end(deps, rec, promotion, Outcome.REJECTED, str(exc))
    refusal = checked.refusal
    if refusal is None and lock.redeploy is None:  # a redeploy is of the active version, by design
        ran = [(rec.last.requested_at, rec.last.promotion_id)] if rec.last is not None else []
        decision = decide_request(
            request_id=lock.id,
            version=str(checked.request.version),
            active=rec.state.active,
            newer=superseded_by(lock.requested_at, lock.id, ran),
        )
        if decision.action is Action.REJECT:
            refusal = decision.reason
    if refusal is not None:
        return end(deps, rec, promotion, Outcome.REJECTED, refusal)
    metrics.promotion_started(ns.tenant.name, ns.environment)
    return start(deps, promotion)


def _answer_queued(deps: Deps, rec: EnvRecord, lock: Request) -> None:
    """The queued requests the lock's start answers: superseded ones rejected, cancelled ones cancelled.
    Their queue entries are deleted once the events are put (a crash in between puts them again)."""
    ns = rec.namespace
    queued = {q.id: q for q in rec.queued}
    events = []
    for request_id in lock.superseded:
        if request_id in queued:
            reason = f"superseded by {lock.id}, a newer request"
            events.append(
                event_for(queued[request_id].request, ev.PROMOTION_REJECTED, reason=reason, outcome="rejected")
            )
    for request_id in lock.cancelled:
        if request_id in queued and request_id != lock.id:
            reason = rec.cancels.get(request_id) or "cancelled while queued"
            events.append(
                event_for(queued[request_id].request, ev.PROMOTION_CANCELLED, reason=reason, outcome="cancelled")
            )
    if events:
        deps.bus.put(events)
        for _ in lock.superseded:
            metrics.promotion_rejected(ns.tenant.name, ns.environment)
    layout = deps.store.layout
    answered = [i for i in (lock.id, *lock.answers) if i in queued or i in rec.cancels]
    keys = [layout.queue(ns, i) for i in answered if i in queued]
    keys += [layout.cancel(ns, i) for i in answered if i in rec.cancels and i != lock.id]
    deps.store.delete(keys)


# --------------------------------------------------------------------------------------------------
# The queue
# --------------------------------------------------------------------------------------------------
def enqueue(deps: Deps, ns: Namespace, request: Request, why: str) -> Result:
    """Wait for the environment (create-only: of two deliveries, one queues the request).

    Then read again: if the environment became free meanwhile (its promotion ended before this entry
    was written, so its drain could not see it), drain now. Either this read or the ending's drain, which
    reads after releasing the lock, sees the entry.
    """
    try:
        queued = deps.store.put_queue(ns, request)
    except StateFull as exc:
        fields = {"tenant": ns.tenant.name, "environment": ns.environment}
        return reject_fields(
            deps, request.id, str(exc), {**fields, **({"version": request.version} if request.version else {})}
        )
    if not queued:
        return ignore(f"duplicate delivery: request {request.id} is already queued", ns.name, request.id, expected=True)
    deps.bus.put([event_for(request, ev.PROMOTION_QUEUED, reason=why)])
    if deps.store.read(ns).lock is None:
        drain(deps, ns)
    return Result("queue", why, request.id, ns.name)


def release_retaken(deps: Deps, rec: EnvRecord) -> Result:
    """Release a lock taken again for a request that had already ended (``EnvRecord.retaken``), once its
    taker can no longer be giving it back itself (its lease ran out, or this is that taker's retry).

    The release is claimed first, create-only, as the lock request's first deploy entry (a leftover the
    next sweep removes): of two sweeps (or a sweep and a request) racing, one deletes the lock, and never
    a lock taken after the release. Then what waits is drained. No event: the request ended before.
    """
    ns, lock = rec.namespace, rec.retaken
    if lock is None:
        return ignore(f"no lock of {ns} to release", ns.name)
    if lock_verdict(deps, lock) is ClaimVerdict.BUSY:
        return Result("wait", f"the lock is {lock.owner}'s until {lock.lease_until}", lock.id, ns.name)
    claim = DeployEntry(n=0, at=now_text(deps), owner=current_id(), done=True)
    if deps.store.append_deploy(Promotion(lock, (), None), claim) is None:
        return ignore(f"the lock of {ns} ({lock.id}) is being released by another invocation", ns.name, lock.id)
    holder, _ = deps.store.verify(ns, lock.id)
    if holder != lock.id:
        return ignore(f"the lock of {ns} is no longer {lock.id}'s", ns.name, lock.id)
    logger.warning("releasing the lock of %s: request %s had ended before it was taken", ns, lock.id)
    deps.store.delete([deps.store.layout.lock(ns)])
    drain(deps, ns)
    return Result("release", f"lock of {lock.id} released: the request had ended before", lock.id, ns.name)


def drain_after(deps: Deps, ns: Namespace, result: Result) -> Result:
    """After an ending, start what waits (the drain reads after the lock's release)."""
    if result.action in ("complete", "fail", "roll_back", "cancel", "reject"):
        drain(deps, ns)
    return result


def cancel_queued(deps: Deps, rec: EnvRecord, request_id: str, reason: str) -> Result | None:
    """An operator cancels a request waiting in the queue: a cancel mark (create-only) that the drain
    answers under the lock. None when the request is not waiting."""
    ns = rec.namespace
    if not any(q.id == request_id for q in rec.waiting):
        return None
    if not deps.store.put_cancel(ns, request_id, reason):
        return ignore(f"request {request_id} is already being cancelled", ns.name, request_id, expected=True)
    if deps.store.read(ns).lock is None:
        drain(deps, ns)
    return Result("cancel", f"{reason} (answered when the environment frees)", request_id, ns.name)


def drain(deps: Deps, ns: Namespace, *, resume_start: bool = True) -> Result | None:
    """Answer what waits if the environment is free. Safe any time, any number of times, by anyone.

    The newest waiting request takes the lock with the ids it answers (older ones superseded, cancelled
    ones), then :func:`run_locked` answers them and starts or refuses it. A request that ends at once
    frees the lock again, so this loops (no recursion). With ``resume_start``, a lock whose start was
    cut short (its owner's retry, or its lease ran out) is started again.
    """
    outcome: Result | None = None
    cache: dict[str, Any] = {}
    for _ in range(DRAIN_ROUNDS):
        tenant = deps.store.read_tenant(ns.tenant)
        rec = tenant.env(ns.environment)
        promotion = rec.promotion
        if promotion is not None:
            if resume_start and _start_cut_short(deps, promotion):
                return run_locked(deps, promotion.request, None, cache)
            return outcome
        waiting = rec.waiting
        if not waiting:
            leftovers = rec.leftovers
            marks = [i for i in rec.cancels if not any(q.id == i for q in waiting)]
            if leftovers or marks:
                layout = deps.store.layout
                deps.store.delete([layout.queue(ns, i) for i in leftovers] + [layout.cancel(ns, i) for i in marks])
            return outcome
        chosen, superseded, cancelled = _choose(rec, waiting)
        request = chosen.request
        if chosen.id not in rec.cancels:
            with contextlib.suppress(*BAD_INPUT):  # bad input now: refused under the lock, with the reason
                request = check(deps, tenant, request, None, cache).request
        lock = _lock_for(
            deps,
            rec,
            request,
            superseded=tuple(q.id for q in superseded),
            cancelled=tuple(q.id for q in cancelled),
            folded=tuple(rec.leftovers),
        )
        if not deps.store.take_lock(lock):
            return outcome  # another invocation is draining (or a request took the lock)
        result = run_locked(deps, lock, None, cache, seen=rec)
        if result is None:
            continue
        outcome = result
        if result.action not in ("reject", "cancel", "fail"):
            return outcome
    logger.error("queue of %s still busy after %d rounds", ns, DRAIN_ROUNDS)
    return outcome


def _choose(
    rec: EnvRecord, waiting: list[QueuedRequest]
) -> tuple[QueuedRequest, list[QueuedRequest], list[QueuedRequest]]:
    """(the request that takes the lock, the older ones it supersedes, the cancelled ones it answers).

    Newest wins by the request's own time. Requests of the very same time (raw put-events of one second)
    are not ordered against each other: none supersedes another, and they run in the order they were
    queued (docs/contract.md).
    """
    cancelled = [q for q in waiting if q.id in rec.cancels]
    live = [q for q in waiting if q.id not in rec.cancels]
    if not live:
        return cancelled[0], [], cancelled
    # A redeploy (a rotated secret) never supersedes a promotion, nor is superseded by one: promotions go
    # first; a redeploy then runs, or is refused if its version is no longer active.
    promotions = [q for q in live if q.request.redeploy is None]
    pool = promotions or live
    newest = max(q.requested_at for q in pool)
    group = [q for q in pool if q.requested_at == newest]
    superseded = [q for q in pool if q.requested_at < newest]
    return group[0], superseded, cancelled
