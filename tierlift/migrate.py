"""``python -m tierlift.migrate [--apply]``: the one-off move of SSM state from the layout before the state
record (issue 17) to today's (``docs/contract.md``).

Per target environment, the old layout kept ``active`` (a bare version), ``last`` (JSON), ``completed``
(a JSON list) and a transition log ``steps/<promotion id>/<NN>``; across tenants ``schedule/<tenant>/<due>``
markers (one per scheduled day) and ``headroom/<requested at>-<namespace>`` entries. The migration writes
each environment's **state record** from what it held (``state/migrated.1``: the active version, the last
outcome, the completed versions), create-only, then deletes the old parameters it replaced. It keeps what
today's layout still reads: ``db/<version>``, the lock ``promotion``, ``queue/<id>``, the service index.
An environment that already has a state record is left alone, so a second run changes nothing; a
promotion in flight keeps its lock (its ending writes the next record). Without ``--apply`` it only prints
the plan. Snapshot schedules move to EventBridge Scheduler with ``tierlift tenant register``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any, NamedTuple

import boto3

from chalicelib.adapters.ssm import SsmParameters
from chalicelib.adapters.state import StateStore
from chalicelib.domain.model import Completed, EnvState, LastOutcome, Outcome
from chalicelib.domain.names import InvalidName, Namespace, Tenant, Version

OLD_ENV_LEAVES = ("active", "last", "completed")
OLD_GLOBAL = ("schedule", "headroom")
MIGRATED = "migrated"


class EnvPlan(NamedTuple):
    namespace: Namespace
    state: EnvState | None  # None: nothing to write (already migrated, or nothing held)
    delete: tuple[str, ...]


class Plan(NamedTuple):
    envs: tuple[EnvPlan, ...]
    delete: tuple[str, ...]  # old global parameters

    def summary(self) -> dict[str, Any]:
        return {
            "environments": len([e for e in self.envs if e.state is not None]),
            "state_records": [str(e.namespace) for e in self.envs if e.state is not None],
            "deletes": sum(len(e.delete) for e in self.envs) + len(self.delete),
        }


def _old_last(text: str | None) -> LastOutcome | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data.get("promotion_id"):
        return None
    return LastOutcome(
        promotion_id=str(data["promotion_id"]),
        version=data.get("version"),
        outcome=str(data.get("outcome") or "completed"),
        reason=data.get("reason"),
        at=str(data.get("at") or ""),
        previous=data.get("previous"),
        requested_at=str(data.get("requested_at") or ""),
    )


def _old_completed(text: str | None) -> tuple[Completed, ...]:
    try:
        versions = json.loads(text) if text else []
    except ValueError:
        versions = []
    kept = [str(v) for v in versions if isinstance(v, str)][-20:]
    return tuple(Completed(v) for v in kept)


def plan(store: StateStore) -> Plan:
    """What the migration would write and delete, from one walk of the root."""
    params = store.parameters.list(store.root)
    by_env: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    old_global: list[str] = []
    prefix = store.root + "/"
    for name, (value, _when) in params.items():
        rest = name[len(prefix) :].split("/")
        if rest[0] in OLD_GLOBAL:
            old_global.append(name)
        elif len(rest) >= 3 and rest[0] not in ("services", "waiting"):
            by_env[(rest[0], rest[1])]["/".join(rest[2:])] = value
            by_env[(rest[0], rest[1])]["\0" + "/".join(rest[2:])] = name
    envs: list[EnvPlan] = []
    for (tenant, env), leaves in sorted(by_env.items()):
        try:
            ns = Tenant.parse(tenant).namespace(env)
        except InvalidName:
            continue
        old = [
            leaves["\0" + k]
            for k in leaves
            if not k.startswith("\0") and (k in OLD_ENV_LEAVES or k.startswith("steps/"))
        ]
        if not old:
            continue
        has_state = any(k.startswith("state/") for k in leaves if not k.startswith("\0"))
        state = None
        if not has_state and (leaves.get("active") or leaves.get("last") or leaves.get("completed")):
            active = leaves.get("active")
            if active:
                Version.parse(active.strip())  # a bare version, or the migration stops here
            state = EnvState(
                seq=1,
                ended=MIGRATED,
                outcome=Outcome.COMPLETED.value,
                reason="migrated from the layout before the state record",
                active=active.strip() if active else None,
                last=_old_last(leaves.get("last")),
                completed=_old_completed(leaves.get("completed")),
            )
        envs.append(EnvPlan(ns, state, tuple(sorted(old))))
    return Plan(tuple(envs), tuple(sorted(old_global)))


def apply(store: StateStore, migration: Plan) -> dict[str, Any]:
    """Write the state records (create-only), then delete what they replace. Safe to run again."""
    written = 0
    for env in migration.envs:
        if env.state is not None and store.create_state(env.namespace, env.state):
            written += 1
        if env.state is None or store.read(env.namespace).state.seq >= 1:
            store.delete(env.delete)  # only once the environment's state record exists
    store.delete(migration.delete)
    return {**migration.summary(), "written": written}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tierlift migrate", allow_abbrev=False, description=__doc__)
    parser.add_argument("--apply", action="store_true", help="write and delete (default: print the plan)")
    parser.add_argument("--ssm-root", default="/tierlift")
    args = parser.parse_args(argv)
    store = StateStore(SsmParameters(boto3.client("ssm")), args.ssm_root)
    migration = plan(store)
    result = apply(store, migration) if args.apply else {**migration.summary(), "dry_run": True}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
