"""``python -m tierlift bench promotion [--promotions N] [--json]``: promotions measured on the real path.

Each promotion runs through the local cloud exactly as in AWS: ``Snapshot Requested`` put on tierlift's
bus, the RDS event the emulator emits, the automatic ``Promotion Requested``, CloudFormation's and ECS's
status events, the previous stack's ``DELETE_COMPLETE``; every handler invoked by EventBridge routing.
Every AWS call the handlers make is counted at the client (botocore's ``before-call``, on the Lambda's
own session), per invocation, with its parameters, so that:

- ``calls`` and ``ssm_writes``/``ssm_reads`` are what one promotion costs (the steady state: the last one,
  which has a previous version to delete);
- ``polls`` counts reads repeated with the same parameters inside one invocation (a waiter's signature:
  the pipeline is event-driven and must never wait in a loop). ``--plant-poll`` makes the stack adapter
  read twice, so a test shows that the figure moves;
- ``params_per_tenant_at_rest`` is the tenant's SSM parameters once everything settled.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

SSM_WRITES = {"PutParameter", "DeleteParameter", "DeleteParameters"}
SSM_READS = {"GetParameter", "GetParameters", "GetParametersByPath"}
READ_PREFIXES = ("Describe", "Get", "List")
TENANT = "bp-0001"


class Recorder:
    """Every call of the Lambda's session, by invocation (handler, thread), with its parameters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, str, str]] = []  # (invocation key, handler, operation, params)

    def __call__(self, invocation: int | None, handler: str, model: Any, params: Any) -> None:
        body = json.dumps(params.get("body") if isinstance(params, dict) else None, sort_keys=True, default=str)
        operation = f"{model.service_model.service_name}:{model.name}"
        with self.lock:
            self.calls.append((f"{handler}#{invocation}", handler, operation, body))

    def mark(self) -> int:
        with self.lock:
            return len(self.calls)

    def since(self, mark: int) -> list[tuple[str, str, str, str]]:
        with self.lock:
            return list(self.calls[mark:])


def is_write(operation: str) -> bool:
    return not operation.split(":", 1)[1].startswith(READ_PREFIXES)


def measure(calls: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    """Counts of one promotion's calls. A **poll** is a read that repeats, with the same parameters, one the
    same invocation made since its last write: reading the effect of one's own write (a claim verified)
    is not waiting; reading the same thing again with nothing done in between is."""
    by_handler: dict[str, Counter[str]] = defaultdict(Counter)
    since_write: dict[str, set[tuple[str, str]]] = defaultdict(set)
    polls = 0
    for key, handler, operation, body in calls:
        by_handler[handler][operation] += 1
        if is_write(operation):
            since_write[key].clear()
        elif (operation, body) in since_write[key]:
            polls += 1
        else:
            since_write[key].add((operation, body))
    ops = Counter(op for _, _, op, _ in calls)
    return {
        "calls": len(calls),
        "ssm_writes": sum(n for op, n in ops.items() if op.startswith("ssm:") and op[4:] in SSM_WRITES),
        "ssm_reads": sum(n for op, n in ops.items() if op.startswith("ssm:") and op[4:] in SSM_READS),
        "polls": polls,
        "by_handler": {h: dict(sorted(c.items())) for h, c in sorted(by_handler.items())},
    }


def plant_poll() -> None:
    """For the test that proves ``polls`` can move: the stack adapter reads every stack twice."""
    from chalicelib.adapters.aws import Stacks

    original = Stacks.describe

    def twice(self: Any, name: str) -> Any:
        original(self, name)
        return original(self, name)

    Stacks.describe = twice  # type: ignore[method-assign]


def _put(events: Any, bus: str, detail_type: str, detail: dict[str, Any]) -> None:
    entry = {"Source": "tierlift", "DetailType": detail_type, "Detail": json.dumps(detail), "EventBusName": bus}
    events.put_events(Entries=[entry])


def run(
    promotions: int, *, days: int = 0, speed: float = 3000.0, port: int = 0, planted: bool = False
) -> dict[str, Any]:
    """``promotions`` qa promotions measured one by one; then ``days`` simulated days, each the tenant's
    snapshot schedule firing (its automatic qa promotion) and a promotion of that version to prod, after
    which the tenant's parameters at rest are counted."""
    from chalicelib.domain.config import parse_config
    from chalicelib.domain.names import Tenant
    from chalicelib.usecases.schedules import sync
    from tierlift.local.cloud import LocalCloud
    from tierlift.schedules import stage_schedules
    from tierlift.world import bootstrap_tenant, register_tenant

    if planted:
        plant_poll()
    log = Path(tempfile.mkdtemp(prefix="tierlift-bench-")) / "handlers.log"
    with LocalCloud(port=port, speed=speed, schedules=False, concurrency=1, handler_log=log) as cloud:
        import boto3

        session = boto3.session.Session(region_name=cloud.region)
        config = bootstrap_tenant(session, TENANT)
        config["snapshot_schedule"] = {"daily_at": "02:00"}
        register_tenant(session, config)
        sync(stage_schedules(session), Tenant.parse(TENANT), parse_config(Tenant.parse(TENANT), config))
        cloud.settle(60)
        recorder = Recorder()
        cloud.call_hooks.append(recorder)
        events = session.client("events")
        per_promotion: list[dict[str, Any]] = []
        started = time.perf_counter()
        for _ in range(promotions):
            mark = recorder.mark()
            time.sleep(1.05)  # one version per second (a snapshot's version is its creation second)
            _put(events, cloud.bus, "Snapshot Requested", {"tenant": TENANT, "requested_by": "bench"})
            time.sleep(0.2)
            cloud.settle(120)
            per_promotion.append(measure(recorder.since(mark)))
        for _ in range(days):
            time.sleep(1.05)
            cloud.fire_scheduler(f"snapshot-{TENANT}")  # the day's scheduled snapshot: qa follows by itself
            time.sleep(0.2)
            cloud.settle(120)
            _put(events, cloud.bus, "Promotion Requested", {"tenant": TENANT, "environment": "prod"})
            time.sleep(0.2)
            cloud.settle(120)
        ssm = session.client("ssm")
        pages = ssm.get_paginator("get_parameters_by_path").paginate(Path="/tierlift", Recursive=True)
        names = sorted(p["Name"] for page in pages for p in page["Parameters"])
        tenant = [n for n in names if n.startswith(f"/tierlift/{TENANT}/")]
        steady = per_promotion[-1] if per_promotion else measure([])
        return {
            "promotions": promotions,
            "days": days,
            "path": "local cloud: EventBridge routing to the Chalice handlers, emulated RDS/CloudFormation/ECS events",
            "calls": steady["calls"],
            "ssm_writes": steady["ssm_writes"],
            "ssm_reads": steady["ssm_reads"],
            "polls": sum(p["polls"] for p in per_promotion),
            "params_per_tenant_at_rest": len(tenant),
            "steady_state": steady,
            "first": per_promotion[0] if per_promotion else None,
            "calls_per_promotion": [p["calls"] for p in per_promotion],
            "ssm_writes_per_promotion": [p["ssm_writes"] for p in per_promotion],
            "params_at_rest": tenant,
            "params_outside_tenants": [n for n in names if not n.startswith(f"/tierlift/{TENANT}/")],
            "seconds": round(time.perf_counter() - started, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tierlift bench", allow_abbrev=False, description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    promotion = sub.add_parser("promotion", allow_abbrev=False, help="promotions through the local cloud")
    promotion.add_argument("--promotions", type=int, default=3)
    promotion.add_argument("--days", type=int, default=0, help="then simulate days of schedules and promotions")
    promotion.add_argument("--json", action="store_true")
    promotion.add_argument("--plant-poll", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    result = run(args.promotions, days=args.days, planted=args.plant_poll)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    steady = result["steady_state"]
    print(f"{result['promotions']} promotions, then {result['days']} days, in the local cloud ({result['seconds']} s)")
    print(f"steady state: {steady['calls']} calls, {steady['ssm_writes']} SSM writes, {steady['ssm_reads']} SSM reads")
    print(f"polls: {result['polls']}; parameters of the tenant at rest: {result['params_per_tenant_at_rest']}")
    for handler, ops in steady["by_handler"].items():
        print(f"  {handler:22} {sum(ops.values()):3}  " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
