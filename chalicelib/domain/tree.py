"""Parameters as read (name -> value, last modified) turned into environments' records. Pure."""

from __future__ import annotations

import logging
from datetime import datetime

from chalicelib.domain.config import InvalidConfig, parse_config
from chalicelib.domain.layout import CANCEL, DB, DEPLOY, LOCK, QUEUE, STATE, Layout
from chalicelib.domain.model import DbRecord, DeployEntry, EnvRecord, EnvState, Promotion, QueuedRequest, Request
from chalicelib.domain.names import InvalidName, Namespace, Tenant, Version

logger = logging.getLogger(__name__)

Params = dict[str, tuple[str, datetime | None]]


def parse_env(layout: Layout, ns: Namespace, params: Params, config: tuple[str, str] | None = None) -> EnvRecord:
    """One environment's record from its parameters (others in ``params`` are skipped).

    Unreadable records raise ``ValueError`` (the sweep reports the namespace and touches nothing there).
    """
    base = layout.env(ns) + "/"
    lock: Request | None = None
    lock_modified: datetime | None = None
    states: list[tuple[EnvState, str, datetime | None]] = []
    deploys: dict[str, list[tuple[DeployEntry, str]]] = {}
    rec = EnvRecord(namespace=ns, config_path=layout.config(ns.tenant))
    if config is not None:
        rec.config_path, rec.config_text = config
    for name, (value, modified) in params.items():
        if not name.startswith(base):
            continue
        key = layout.env_key(name[len(base) :])
        if key is None:
            continue
        if key.kind == LOCK:
            lock, lock_modified = Request.from_json(value), modified
        elif key.kind == STATE:
            states.append((EnvState.from_json(value), name, modified))
        elif key.kind == DEPLOY:
            deploys.setdefault(key.ident, []).append((DeployEntry.from_json(value), name))
        elif key.kind == DB:
            version = Version.parse(key.ident)
            try:
                rec.db[version.value] = DbRecord.from_json(value)
            except (TypeError, ValueError):
                rec.db[version.value] = DbRecord("", "", "", 0, "", version.value)
        elif key.kind == QUEUE:
            rec.queued.append(QueuedRequest(Request.from_json(value), modified))
        elif key.kind == CANCEL:
            rec.cancels[key.ident] = value
    holder = lock.id if lock else None
    if lock is not None and _retaken(lock_modified, [m for state, _, m in states if state.ended == holder]):
        # The request's ending was recorded before the lock was taken: a late duplicate took the lock
        # again after the request had ended, then died before giving it back (see ``EnvRecord.retaken``).
        rec.retaken, lock, holder = lock, None, None
    settled = [s for s in states if s[0].ended != holder]
    ending = [s for s in states if holder is not None and s[0].ended == holder]
    order = lambda item: (item[0].seq, item[0].attempt)  # noqa: E731
    if settled:
        newest = max(settled, key=order)
        rec.state, rec.state_key, rec.active_since = newest[0], newest[1], newest[2]
        rec.stale.extend(name for state, name, _ in settled if name != newest[1])
    if lock is not None and not ending and rec.state.has_answered(lock.id):
        # Answered without running (superseded or cancelled while queued), then taken by a late duplicate.
        rec.retaken, lock = lock, None
    if lock is not None:
        mine = sorted(deploys.pop(lock.id, []), key=lambda d: d[0].n)
        claimed_item = max(ending, key=order) if ending else None
        claimed = claimed_item[0] if claimed_item else None
        rec.stale.extend(name for _, name, _ in ending if claimed_item is not None and name != claimed_item[1])
        rec.promotion = Promotion(lock, tuple(d for d, _ in mine), claimed)
    for entries in deploys.values():
        rec.stale.extend(name for _, name in entries)
    return rec


def _retaken(lock_modified: datetime | None, endings: list[datetime | None]) -> bool:
    """Was the lock written after every ending record of its request? Only a strictly later write
    counts (unknown or equal times read as an ending claimed under the lock, which is resumed)."""
    return bool(endings) and lock_modified is not None and all(m is not None and m < lock_modified for m in endings)


def parse_tree(layout: Layout, params: Params) -> list[EnvRecord]:
    """Every environment's record from one walk of the root (the sweep and ``status``): environments
    with parameters, and every target environment of each readable config."""
    configs: dict[str, tuple[str, str]] = {}
    groups: dict[tuple[str, str], Params] = {}
    for name, item in params.items():
        split = layout.split(name)
        if split is None:
            continue
        tenant, env, rest = split
        if rest == "config" and not env:
            configs[tenant] = (name, item[0])
        elif env:
            groups.setdefault((tenant, env), {})[name] = item
    keys = set(groups)
    for tenant_name, (_, text) in configs.items():
        try:
            config = parse_config(Tenant.parse(tenant_name), text)
        except (InvalidName, InvalidConfig):
            continue
        keys.update((tenant_name, env) for env in config.targets)
    out: list[EnvRecord] = []
    for tenant_name, env in sorted(keys):
        ns = layout.namespace_of(tenant_name, env)
        if ns is None:
            continue
        out.append(parse_env(layout, ns, groups.get((tenant_name, env), {}), configs.get(tenant_name)))
    return out
