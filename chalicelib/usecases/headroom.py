"""Waiting holding the lock: for DB-instance headroom under the RDS quota, or for a stack's delete.

A promotion holds two DB instances while it runs (the old one serves until the new tasks are stable),
and RDS refuses a restore past the account's ``DBInstances`` quota (40 by default). Before creating its
stack a promotion checks the headroom (``DescribeAccountAttributes``, cached for a minute per
container). Far from the quota nobody waits, so nothing more is read; near it (``MARGIN`` instances or
fewer left) the waiting list ``/<root>/waiting/`` is read and the promotion goes only if nobody waits
before it. Otherwise it *parks* there (a ``Promotion Queued`` with the reason), and so does a promotion
whose version's stack of an earlier promotion is still being deleted. A restore that RDS refuses for
the quota anyway (two containers admitted the last free instance at once) parks the same way instead of
failing. Every DB stack that finishes deleting frees an instance (and perhaps a name) and admits the
waiting promotions it can, in the order they asked. Parking and admitting are safe to repeat: the entry
is create-only and a start is idempotent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.deps import Deps
from chalicelib.domain.cells import CellRefused, cell_key
from chalicelib.domain.model import Promotion, Stage
from chalicelib.usecases.cells import of_promotion
from chalicelib.usecases.transitions import Result

logger = logging.getLogger(__name__)

QUOTA_ERRORS = ("InstanceQuotaExceeded", "DBInstanceQuotaExceeded", "quota")
CACHE_SECONDS = 60.0
MARGIN = 5  # with more instances free than this, nobody waits: the waiting list is not read
_cache: dict[str, tuple[float, int | None]] = {}


def is_quota_failure(reason: str) -> bool:
    lowered = reason.lower()
    return any(code.lower() in lowered for code in QUOTA_ERRORS)


def free_instances(deps: Deps, *, fresh: bool = False) -> int | None:
    """DB instances the account of ``deps``'s cell may still create (None when RDS does not say: then do
    not hold back). The quota is per account and region: each cell has its own, cached apart."""
    key = cell_key(deps.cell)
    cached = _cache.get(key)
    if not fresh and cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    free: int | None = None
    try:
        used_max = deps.rds.quotas().get("DBInstances")
    except (ClientError, BotoCoreError, NotImplementedError) as exc:
        logger.warning("DB instance headroom unknown: %s", exc)
    else:
        if used_max is not None:
            free = used_max[1] - used_max[0]
    _cache[key] = (time.monotonic(), free)
    return free


def forget_cached() -> None:
    _cache.clear()


def _entry(deps: Deps, promotion: Promotion) -> str:
    return deps.store.waiting_entry(promotion.request.requested_at or promotion.request.started, promotion.namespace)


def may_start(deps: Deps, promotion: Promotion) -> bool:
    """True when this promotion may create its DB stack now (RDS has room and nobody waits before it)."""
    free = free_instances(deps)
    if free is None or free > MARGIN:
        return True
    mine, account = _entry(deps, promotion), _account(promotion)
    if any(
        w.entry < mine and w.promotion_id != promotion.id and w.stack is None and w.account == account
        for w in deps.store.waiting()
    ):
        return False  # an older promotion waits for this cell's headroom (other cells' do not count)
    return free > 0


def _account(promotion: Promotion) -> str | None:
    cell = promotion.request.cell_settings
    return cell.account if cell is not None else None


def park(deps: Deps, promotion: Promotion, *, stack: str | None = None, attempt: int = 0) -> bool:
    """Put the promotion on the waiting list (idempotent): True when this call put it there."""
    data: dict[str, object] = {"promotion_id": promotion.id, "stack": stack, "attempt": attempt}
    if _account(promotion) is not None:
        data["account"] = _account(promotion)
    value = json.dumps(data)
    return deps.store.parameters.create(_entry(deps, promotion), value)


def attempts(deps: Deps, entry: str) -> int:
    text = deps.store.parameters.get(entry)
    try:
        return int(json.loads(text or "{}").get("attempt", 0))
    except (ValueError, AttributeError):
        return 0


def admit(deps: Deps, start: Callable[[Deps, Promotion, int], Result], deleted_stack: str | None = None) -> int:
    """A DB stack finished deleting: start the waiting promotions that fit, oldest first.

    ``start(deps, promotion, attempt)`` is the cutover's start, with the deps of the promotion's cell. A
    promotion waiting for ``deleted_stack``'s name goes whatever the quota (the deleted stack freed its
    instance too). Headroom is counted per cell: each cell's waiting promotions are admitted against
    that cell's free instances (one ``DescribeAccountAttributes`` per cell with promotions waiting).
    """
    queue = deps.store.waiting()
    if not queue:
        return 0
    free: dict[str | None, int | None] = {}
    admitted: dict[str | None, int] = {}
    total = 0
    for waiting in queue:
        if waiting.stack is not None and waiting.stack != deleted_stack:
            continue
        account = waiting.account
        if waiting.stack is None and account in free:
            room = free[account]
            if room is not None and admitted.get(account, 0) >= room:
                continue
        promotion = deps.store.read(waiting.namespace).promotion
        if promotion is None or promotion.id != waiting.promotion_id or promotion.stage is not Stage.RESTORING:
            deps.store.delete_waiting(waiting.entry)  # ended, or already further: a leftover
            continue
        try:
            bound = of_promotion(deps, promotion)
        except CellRefused as exc:  # that cell's promotions keep waiting (their locks held); others go on
            logger.warning("cannot admit %s: %s", promotion.id, exc)
            continue
        if waiting.stack is None and account not in free:
            free[account] = free_instances(bound, fresh=True)
            room = free[account]
            if room is not None and room <= 0:
                continue
        outcome = start(bound, promotion, attempts(deps, waiting.entry))
        if outcome.action != "wait":
            deps.store.delete_waiting(waiting.entry)
        admitted[account] = admitted.get(account, 0) + 1
        total += 1
    return total
