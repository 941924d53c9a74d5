"""DB-instance headroom: promotions wait for room under the account's RDS quota instead of failing.

A promotion holds two DB instances while it runs (the old one serves until the new tasks are stable),
and RDS refuses a restore past the account's ``DBInstances`` quota (40 by default). Before creating its
stack, a promotion checks the headroom (``DescribeAccountAttributes``, cached for a minute per
container) and the waiting list ``/<root>/headroom/<requested at>-<namespace>``: it goes ahead only if
no one waits before it and an instance is free; otherwise it *parks* there (stage ``requested``, a
``Promotion Queued`` with the reason). A restore that RDS refuses for the quota anyway (two containers
admitted the last free instance at once) parks the same way instead of failing. Every DB stack that
finishes deleting frees an instance and admits the oldest waiting promotions (so does the sweep), in
the order they asked. Parking and admitting are safe to repeat: the entry is create-only and a start
is idempotent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.deps import Deps
from chalicelib.state import Promotion, Stage

logger = logging.getLogger(__name__)

QUOTA_ERRORS = ("InstanceQuotaExceeded", "DBInstanceQuotaExceeded", "quota")
CACHE_SECONDS = 60.0
_cache: dict[str, tuple[float, int | None]] = {}


def is_quota_failure(reason: str) -> bool:
    lowered = reason.lower()
    return any(code.lower() in lowered for code in QUOTA_ERRORS)


def free_instances(deps: Deps, *, fresh: bool = False) -> int | None:
    """DB instances the account may still create (None when RDS does not say: then do not hold back)."""
    cached = _cache.get("free")
    if not fresh and cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    free: int | None = None
    try:
        quotas = deps.rds.client.describe_account_attributes().get("AccountQuotas", [])
    except (ClientError, BotoCoreError, NotImplementedError) as exc:
        logger.warning("DB instance headroom unknown: %s", exc)
    else:
        for quota in quotas:
            if quota.get("AccountQuotaName") == "DBInstances":
                free = int(quota.get("Max", 0)) - int(quota.get("Used", 0))
    _cache["free"] = (time.monotonic(), free)
    return free


def forget_cached() -> None:
    _cache.clear()


def _entry(deps: Deps, promotion: Promotion) -> str:
    return deps.store.headroom_entry(promotion.request.requested_at or promotion.request.started, promotion.namespace)


def may_start(deps: Deps, promotion: Promotion) -> bool:
    """True when this promotion may create its DB stack now (nobody waits before it and RDS has room)."""
    mine = _entry(deps, promotion)
    if any(name < mine and pid != promotion.id for name, _, pid in deps.store.headroom_waiting()):
        return False
    free = free_instances(deps)
    return free is None or free > 0


def park(deps: Deps, promotion: Promotion) -> None:
    """Put the promotion on the waiting list (idempotent)."""
    deps.store.put_headroom(_entry(deps, promotion), promotion.id)


def unpark(deps: Deps, promotion: Promotion) -> None:
    deps.store.delete_headroom(_entry(deps, promotion))


def admit(deps: Deps, start: Any) -> int:
    """Start the oldest waiting promotions that fit; ``start(rec, promotion)`` is the cutover's start."""
    queue = deps.store.headroom_waiting()
    if not queue:
        return 0
    free = free_instances(deps, fresh=True)
    admitted = 0
    for entry, ns, promotion_id in queue:
        if free is not None and admitted >= free:
            break
        rec = deps.store.recorded(ns, with_queue=False)
        promotion = rec.promotion
        if promotion is None or promotion.id != promotion_id or promotion.stage is not Stage.REQUESTED:
            deps.store.delete_headroom(entry)  # ended, or already started: a leftover
            continue
        start(rec, promotion)
        admitted += 1
    return admitted
