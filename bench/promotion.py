"""Benchmark one promotion: AWS calls by handler and operation, SSM writes, handler time.

``--promotions`` promotions of a fresh version to qa, each driven through the real handlers
(``Snapshot Requested`` → ``RDS-EVENT-0042`` → ``Promotion Requested`` → ``CREATE_COMPLETE`` →
``SERVICE_DEPLOYMENT_COMPLETED`` → the previous stack's ``DELETE_COMPLETE``) in moto (``mock_aws``,
in-process), every call counted with a botocore ``before-call`` hook and every handler timed. The
side-by-side with a waiter-based pipeline runs on the local cloud: ``bench/waiters.py``.

Run: ``.venv/bin/python bench/promotion.py [--promotions 20] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from moto import mock_aws

ACCOUNT, REGION = "123456789012", "us-east-1"
WRITES = ("PutParameter", "DeleteParameter", "DeleteParameters")


class Calls:
    def __init__(self) -> None:
        self.by_handler: dict[str, Counter[str]] = defaultdict(Counter)
        self.current = "setup"

    def __call__(self, model: Any, **_: Any) -> None:
        self.by_handler[self.current][f"{model.service_model.service_name}:{model.name}"] += 1


def _event(
    detail_type: str,
    source: str,
    detail: dict[str, Any],
    *,
    when: datetime,
    resources: list[str] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    import uuid

    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": resources or [],
        "detail": detail,
    }


def tierlift(promotions: int) -> dict[str, Any]:
    from chalicelib.deps import Deps, set_deps
    from chalicelib.domain.names import Namespace, Version
    from chalicelib.invocation import invocation
    from chalicelib.settings import Settings
    from chalicelib.usecases import promotion as promo
    from chalicelib.usecases.headroom import forget_cached
    from tierlift.world import bootstrap_tenant

    session = boto3.session.Session(region_name=REGION)
    bootstrap_tenant(session, "xy-0146")
    deps = Deps.from_session(session, Settings.from_env())
    set_deps(deps)
    forget_cached()
    calls = Calls()
    for client in (
        deps.store.parameters.client,
        deps.rds.client,
        deps.stacks.client,
        deps.services.client,
        deps.bus.client,
    ):
        client.meta.events.register("before-call.*.*", calls)
    sqs = session.client("sqs")
    queue = sqs.create_queue(QueueName="bench-outbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = session.client("events")
    bus = deps.settings.event_bus
    events.create_event_bus(Name=bus)  # tierlift's bus, where the pipeline puts its events
    events.put_rule(Name="bench", EventPattern=json.dumps({"source": ["tierlift"]}), EventBusName=bus)
    events.put_targets(Rule="bench", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])

    def outbox() -> list[dict[str, Any]]:
        out = []
        while True:
            got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])

    times: dict[str, list[float]] = defaultdict(list)

    def run(handler: str, use_case: Any, event: dict[str, Any]) -> Any:
        calls.current = handler
        started = time.perf_counter()
        with invocation(None):
            result = use_case(deps, event)
        times[handler].append(time.perf_counter() - started)
        calls.current = "setup"
        return result

    qa = Namespace.parse("xy-0146-qa")
    cfn = session.client("cloudformation")
    base = datetime(2026, 11, 1, tzinfo=UTC)
    previous: Version | None = None
    per_promotion: list[Counter[str]] = []
    for i in range(promotions):
        before = {h: Counter(c) for h, c in calls.by_handler.items()}
        when = base + timedelta(hours=i)
        version = Version.from_datetime(when)
        run(
            "snapshot_requested",
            promo.request_snapshot,
            _event("Snapshot Requested", "tierlift", {"tenant": "xy-0146", "requested_by": "bench"}, when=when),
        )
        snapshot = f"xy-0146-dev-{version}"
        run(
            "snapshot_created",
            promo.on_snapshot_created,
            _event(
                "RDS DB Snapshot Event",
                "aws.rds",
                {"EventID": "RDS-EVENT-0042", "SourceIdentifier": snapshot, "SourceType": "SNAPSHOT"},
                when=when,
            ),
        )
        request = next(e for e in outbox() if e["detail-type"] == "Promotion Requested")
        run("promotion_requested", promo.on_promotion_requested, request)
        stack_name = qa.stack_name(version)
        stack_id = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]["StackId"]
        status = {"stack-id": stack_id, "status-details": {"status": "CREATE_COMPLETE", "status-reason": ""}}
        run(
            "stack_status CREATE_COMPLETE",
            promo.on_stack_status,
            _event("CloudFormation Stack Status Change", "aws.cloudformation", status, when=when),
        )
        deployment = deps.store.get_promotion(qa).deployment_id
        ecs = {"eventName": "SERVICE_DEPLOYMENT_COMPLETED", "deploymentId": deployment}
        service = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/common-nonprod/xy-0146-qa"
        run(
            "deployment_state COMPLETED",
            promo.on_deployment_state,
            _event("ECS Deployment State Change", "aws.ecs", ecs, when=when, resources=[service]),
        )
        if previous is not None:
            old = {
                "stack-id": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{qa.stack_name(previous)}/x",
                "status-details": {"status": "DELETE_COMPLETE", "status-reason": ""},
            }
            run(
                "stack_status DELETE_COMPLETE",
                promo.on_stack_status,
                _event("CloudFormation Stack Status Change", "aws.cloudformation", old, when=when),
            )
        outbox()
        assert deps.store.get_active(qa) == version, "the promotion did not complete"
        previous = version
        delta: Counter[str] = Counter()
        for handler, counter in calls.by_handler.items():
            if handler == "setup":
                continue
            for op, n in counter.items():
                delta[f"{handler}|{op}"] += n - before.get(handler, Counter()).get(op, 0)
        per_promotion.append(delta)
    steady = per_promotion[-1]  # a promotion with a previous version to delete
    by_handler: dict[str, Counter[str]] = defaultdict(Counter)
    for key, n in steady.items():
        handler, op = key.split("|")
        if n:
            by_handler[handler][op] += n
    total = sum(steady.values())
    ssm_writes = sum(n for key, n in steady.items() if key.split("|")[1].split(":")[1] in WRITES)
    return {
        "promotions": promotions,
        "calls_per_promotion": total,
        "ssm_writes_per_promotion": ssm_writes,
        "by_handler": {h: dict(sorted(c.items())) for h, c in by_handler.items()},
        "by_operation": dict(
            sorted(Counter(op for key, n in steady.items() for op in [key.split("|")[1]] * n).items())
        ),
        "polls": sum(n for key, n in steady.items() if "Describe" in key and "waiter" in key),
        "handler_ms": {
            h: {
                "p50": round(statistics.median(t) * 1000, 1),
                "p95": round(sorted(t)[int(0.95 * (len(t) - 1))] * 1000, 1),
            }
            for h, t in times.items()
        },
        "compute_seconds_per_promotion": round(sum(statistics.median(t) for t in times.values()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promotions", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from tierlift import moto_patches

    moto_patches.apply()  # the DB template's fixes moto needs (see tierlift/moto_patches.py)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    with mock_aws():
        ours = tierlift(args.promotions)
    if args.json:
        print(json.dumps({"tierlift": ours}, indent=2))
        return
    print(f"tierlift, one promotion (the {args.promotions}th, with a previous version to delete):")
    print(f"  AWS calls {ours['calls_per_promotion']}, SSM writes {ours['ssm_writes_per_promotion']}, polls 0")
    for handler, ops in ours["by_handler"].items():
        print(f"  {handler:32} {sum(ops.values()):3}  {', '.join(f'{k} {v}' for k, v in ops.items())}")
    print("  handler time (ms, in-process, moto):")
    for handler, t in ours["handler_ms"].items():
        print(f"    {handler:32} p50 {t['p50']:7.1f}  p95 {t['p95']:7.1f}")
    print(f"  compute per promotion: {ours['compute_seconds_per_promotion']} s")


if __name__ == "__main__":
    main()
