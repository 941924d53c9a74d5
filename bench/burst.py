"""The nightly burst: N tenants whose dev snapshots complete within the same minute, under the RDS quota.

Every tenant already runs qa on a restored DB (an initial promotion), so each nightly promotion needs a
second DB instance in qa until the old one is deleted. The account's ``DBInstances`` quota (enforced by
the local cloud as RDS does, ``tierlift/local/quotas.py``) is set to what exists plus ``--room`` (10
by default): at most that many promotions can restore at once, the rest must wait for headroom and
none may fail for the quota. Reported: seconds until every automatic promotion ended (wall, and AWS
time = wall x speed), outcomes, promotions that waited (``Promotion Queued``), the most instances held
at once, Lambda retries, throttles, dead letters, AWS calls by operation.

Run: ``.venv/bin/python bench/burst.py [--tenants 50] [--room 10] [--speed 600] [--concurrency 4] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tierlift.local import LocalCloud
from tierlift.local.cloud import ACCOUNT
from tierlift.local.quotas import Quotas
from tierlift.world import bootstrap_tenant

TERMINAL = ("Promotion Completed", "Promotion Failed", "Promotion Rolled Back", "Promotion Rejected")


def instances(cloud: LocalCloud) -> int:
    from moto.rds.models import rds_backends

    with cloud.lock:
        return len(rds_backends[ACCOUNT][cloud.region].databases)


def bus(cloud: LocalCloud, since: float = 0.0) -> list[dict[str, Any]]:
    return [
        e.event
        for e in cloud.timeline.snapshot()
        if e.kind == "event" and e.event is not None and e.at >= since and e.event.get("source") == "tierlift"
    ]


def ended(cloud: LocalCloud, tenants: list[str], since: float) -> dict[str, str]:
    out: dict[str, str] = {}
    for event in bus(cloud, since):
        detail = event.get("detail") or {}
        if event.get("detail-type") in TERMINAL and detail.get("environment") == "qa":
            out.setdefault(str(detail.get("tenant")), str(event.get("detail-type")))
    return {t: o for t, o in out.items() if t in tenants}


def put(cloud: LocalCloud, entries: list[dict[str, Any]]) -> None:
    events = cloud.client("events")
    for i in range(0, len(entries), 10):
        events.put_events(Entries=[{**e, "EventBusName": cloud.bus} for e in entries[i : i + 10]])


def snapshot_all(cloud: LocalCloud, tenants: list[str]) -> None:
    put(
        cloud,
        [
            {"Source": "tierlift", "DetailType": "Snapshot Requested", "Detail": json.dumps({"tenant": t})}
            for t in tenants
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--room", type=int, default=10, help="instances the quota leaves free before the burst")
    parser.add_argument("--speed", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tenants = [f"bu-{i + 1:04d}" for i in range(args.tenants)]
    quotas = Quotas(db_instances=10_000)
    cloud = LocalCloud(
        port=0,
        speed=args.speed,
        schedules=True,
        concurrency=args.concurrency,
        quotas=quotas,
        handler_log=Path("/tmp/tierlift-local/burst-handlers.log"),
    )
    with cloud:
        import boto3  # the cloud has pointed AWS_ENDPOINT_URL at itself

        world = boto3.session.Session(region_name=cloud.region)
        for tenant in tenants:
            bootstrap_tenant(world, tenant, automatic=("qa",))
        # Night 0: every qa gets its first DB (no quota pressure), one second apart from night 1's versions.
        snapshot_all(cloud, tenants)
        deadline = time.monotonic() + args.timeout
        while len(ended(cloud, tenants, 0.0)) < len(tenants) and time.monotonic() < deadline:
            time.sleep(0.2)
        cloud.settle(timeout=120)
        time.sleep(1.1)
        used = instances(cloud)
        quotas.db_instances = used + args.room
        peak = [used]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], instances(cloud))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        since = cloud.timeline.snapshot()[-1].at if cloud.timeline.snapshot() else 0.0
        calls_before = Counter(cloud.calls_by_operation)
        by_handler_before = Counter(cloud.calls_by_handler_operation)
        runs: Counter[str] = Counter()
        cloud.on_invocation.append(lambda record: runs.update([str(record["handler"])]))
        started = time.monotonic()
        snapshot_all(cloud, tenants)  # the nightly burst: every dev snapshot within the same minute
        while len(ended(cloud, tenants, since)) < len(tenants) and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        outcomes = ended(cloud, tenants, since)
        stop.set()
        sampler.join(2)
        entries = [e for e in cloud.timeline.snapshot() if e.at >= since]
        night = bus(cloud, since)
        waited = {
            str((e.get("detail") or {}).get("tenant"))
            for e in night
            if e.get("detail-type") == "Promotion Queued" and (e.get("detail") or {}).get("environment") == "qa"
        }
        reasons = Counter(
            str((e.get("detail") or {}).get("reason", ""))[:80]
            for e in night
            if e.get("detail-type") in ("Promotion Queued", "Promotion Failed", "Promotion Rejected")
        )
        calls = Counter(cloud.calls_by_operation)
        calls.subtract(calls_before)
        by_handler = Counter(cloud.calls_by_handler_operation)
        by_handler.subtract(by_handler_before)
        report = {
            "command": f"bench/burst.py --tenants {args.tenants} --room {args.room} --speed {args.speed:g} "
            f"--concurrency {args.concurrency}",
            "quota": {"DBInstances": quotas.db_instances, "used_before": used, "peak_used": peak[0]},
            "all_ended": len(outcomes) == len(tenants),
            "seconds": round(elapsed, 2),
            "aws_minutes": round(elapsed * args.speed / 60, 1),
            "outcomes": dict(Counter(outcomes.values())),
            "not_ended": sorted(set(tenants) - set(outcomes)),
            "waited_for_headroom_or_queue": len(waited),
            "reasons": dict(reasons.most_common(8)),
            "lambda_retries": sum(1 for e in entries if e.kind == "retry"),
            "throttled": sum(1 for e in entries if e.what.startswith("[THROTTLED]")),
            "dead_letters": len(cloud.dead_letters),
            "aws_calls": dict((k, v) for k, v in calls.most_common() if v),
            "invocations_by_handler": dict((k, v) for k, v in runs.most_common() if v),
            "aws_calls_by_handler": dict((k, v) for k, v in by_handler.most_common(25) if v),
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>30}: {value}")
    return 0 if report["all_ended"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
