"""Benchmark the sweep: AWS calls per namespace and wall time at 100, 1,000 and 3,000 namespaces.

Builds each world in moto (in-process ``mock_aws``): per tenant a config, a source DB and source
snapshots, and for qa and prod an ``active`` version, its ``db/<version>`` record and its DB stack
(a one-resource template, so 2,000 stacks build in seconds). Then it sweeps twice through the real
API clients, counting every call with a botocore ``before-call`` hook:

* ``clean``: nothing to delete (the steady state of an hourly sweep);
* ``orphans``: after planting a few orphan stacks, a ``DELETE_FAILED`` stack, db records without a
  stack and expired final snapshots, which the sweep must remove (and then does, checked).

Run: ``.venv/bin/python bench/sweep.py [--sizes 100,1000,3000] [--orphans 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends

from chalicelib.deps import Deps, utcnow
from chalicelib.names import KIND_TAG, Tenant, Version, dict_to_tags
from chalicelib.settings import Settings
from chalicelib.sweep import run_sweep
from tierlift.world import Common, tenant_config

ACCOUNT, REGION = "123456789012", "us-east-1"
TEMPLATE = json.dumps({"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}})
NONPROD = Common(
    "nonprod", "vpc-0a", ("subnet-0123456789abcdef0",), "sg-0123456789abcdef0", "common-nonprod-db", "common-nonprod"
)
PROD = Common("prod", "vpc-0b", ("subnet-0fedcba987654321f",), "sg-0fedcba9876543210", "common-prod-db", "common-prod")
QA_VERSION, PROD_VERSION, OLD_VERSION = "20261127200000", "20261120093000", "20261101000000"


class Counter:
    """Every AWS call the sweep's clients make (botocore ``before-call``)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, model: Any, **_: Any) -> None:
        key = f"{model.service_model.service_name}:{model.name}"
        self.calls[key] = self.calls.get(key, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@dataclass
class Row:
    namespaces: int
    scenario: str
    stacks: int
    snapshots: int
    calls: int
    seconds: float
    actions: int
    by_call: dict[str, int]
    build_seconds: float
    timings: dict[str, float]

    @property
    def per_namespace(self) -> float:
        return self.calls / self.namespaces


def tenant_name(i: int) -> str:
    return f"t{i // 10000:x}{'abcdefghij'[i // 1000 % 10]}-{i % 10000:04d}"


def build(session: boto3.session.Session, tenants: int) -> None:
    """The steady-state world: every tenant's qa and prod hold a version and its stack."""
    ssm, rds, cfn = session.client("ssm"), session.client("rds"), session.client("cloudformation")
    for i in range(tenants):
        tenant = Tenant.parse(tenant_name(i))
        config = tenant_config(tenant.name, NONPROD, PROD)
        ssm.put_parameter(Name=f"/tierlift/{tenant}/config", Value=json.dumps(config), Type="String")
        rds.create_db_instance(
            DBInstanceIdentifier=f"{tenant}-dev",
            DBInstanceClass="db.t3.micro",
            Engine="mysql",
            AllocatedStorage=20,
            MasterUsername="admin",
            MasterUserPassword="bench-only-password",
        )
        dev = tenant.namespace("dev")
        for version in (PROD_VERSION, QA_VERSION):
            rds.create_db_snapshot(
                DBSnapshotIdentifier=dev.snapshot_id(Version(version)),
                DBInstanceIdentifier=f"{tenant}-dev",
                Tags=dict_to_tags(dev.tags(Version(version), **{KIND_TAG: "source-snapshot"})),
            )
        for env, version in (("qa", QA_VERSION), ("prod", PROD_VERSION)):
            ns = tenant.namespace(env)
            plant_stack(cfn, ns, version)
            ssm.put_parameter(Name=f"/tierlift/{tenant}/{env}/active", Value=version, Type="String")
            record = {"stack": ns.stack_name(Version(version)), "version": version, "endpoint": "db", "port": 3306}
            ssm.put_parameter(Name=f"/tierlift/{tenant}/{env}/db/{version}", Value=json.dumps(record), Type="String")


def plant_stack(cfn: Any, ns: Any, version: str) -> str:
    name = ns.stack_name(Version(version))
    cfn.create_stack(StackName=name, TemplateBody=TEMPLATE, Tags=dict_to_tags(ns.tags(Version(version))))
    return name


def plant_orphans(session: boto3.session.Session, tenants: int, count: int) -> dict[str, list[str]]:
    """A few things for the sweep to remove, spread over the tenants."""
    cfn, ssm, rds = session.client("cloudformation"), session.client("ssm"), session.client("rds")
    planted: dict[str, list[str]] = {"stacks": [], "records": [], "snapshots": []}
    step = max(1, tenants // max(1, count))
    picks = [Tenant.parse(tenant_name(i)) for i in range(0, tenants, step)][:count]
    for tenant in picks:
        planted["stacks"].append(plant_stack(cfn, tenant.namespace("qa"), OLD_VERSION))
        ssm.put_parameter(Name=f"/tierlift/{tenant}/prod/db/{OLD_VERSION}", Value="{}", Type="String")
        planted["records"].append(f"/tierlift/{tenant}/prod/db/{OLD_VERSION}")
        final = f"{tenant}-prod-db-{OLD_VERSION}-final"
        tags = tenant.namespace("prod").tags(Version(OLD_VERSION), **{KIND_TAG: "final-snapshot"})
        rds.create_db_snapshot(
            DBSnapshotIdentifier=final, DBInstanceIdentifier=f"{tenant}-dev", Tags=dict_to_tags(tags)
        )
        planted["snapshots"].append(final)
    # One stack whose delete failed earlier: the sweep retries it.
    failed = plant_stack(cfn, picks[0].namespace("prod"), OLD_VERSION)
    backend = cloudformation_backends[ACCOUNT][REGION]
    next(s for s in backend.stacks.values() if s.name == failed).status = "DELETE_FAILED"
    planted["stacks"].append(failed)
    return planted


def sweep(deps: Deps, namespaces: int, scenario: str, build_seconds: float) -> Row:
    counter = Counter()
    clients = (deps.store._ssm, deps.rds.client, deps.stacks.client, deps.services.client, deps.bus.client)
    for client in clients:
        client.meta.events.register("before-call.*.*", counter)
    started = time.perf_counter()
    result = run_sweep(deps)
    seconds = time.perf_counter() - started
    for client in clients:
        client.meta.events.unregister("before-call.*.*", counter)
    actions = sum(1 for e in result.entries if e.status == "done")
    if result.errors:
        raise SystemExit(f"sweep errors: {result.errors[:5]}")
    return Row(
        namespaces,
        scenario,
        result.stacks,
        result.snapshots,
        counter.total,
        seconds,
        actions,
        counter.calls,
        build_seconds,
        result.timings,
    )


def measure(namespaces: int, orphans: int) -> list[Row]:
    tenants = namespaces // 3
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        started = time.perf_counter()
        build(session, tenants)
        build_seconds = time.perf_counter() - started
        deps = Deps.from_session(session, Settings())
        deps.clock = lambda: utcnow() + timedelta(days=8)  # every stack past grace, final snapshots expired
        rows = [sweep(deps, namespaces, "clean", build_seconds)]
        planted = plant_orphans(session, tenants, orphans)
        rows.append(sweep(deps, namespaces, "orphans", build_seconds))
        pages = session.client("cloudformation").get_paginator("describe_stacks").paginate()
        left = {s["StackName"] for page in pages for s in page["Stacks"]}
        assert not left & set(planted["stacks"]), "planted orphan stacks survived the sweep"
        assert len(left) == 2 * tenants, "the sweep deleted a stack it should have kept"
        rows.append(sweep(deps, namespaces, "after", build_seconds))
    return rows


def ms(row: Row, phase: str) -> str:
    return f"{row.timings.get(phase, 0.0) * 1000:,.0f} ms"


def table(rows: list[Row]) -> str:
    lines = [
        "| namespaces | scenario | stacks | snapshots | AWS calls | calls/namespace | wall time | gather | plan "
        "| act | actions done |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.namespaces:,} | {r.scenario} | {r.stacks:,} | {r.snapshots:,} | {r.calls:,} | "
            f"{r.per_namespace:.3f} | {r.seconds:.2f} s | {ms(r, 'gather')} | {ms(r, 'plan')} | {ms(r, 'act')} | "
            f"{r.actions} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,3000", help="namespaces per world, comma separated")
    parser.add_argument("--orphans", type=int, default=5, help="orphan stacks (and records, snapshots) planted")
    parser.add_argument("--json", action="store_true", help="also print every row as JSON, with calls by API")
    args = parser.parse_args(argv)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "bench")
    os.environ["AWS_DEFAULT_REGION"] = REGION
    # 1,000 tenants keep thousands of manual snapshots: an account this size has a raised quota.
    os.environ.setdefault("MOTO_RDS_SNAPSHOT_LIMIT", "100000")
    for key in [k for k in os.environ if k.startswith("TIERLIFT_") or k == "AWS_ENDPOINT_URL"]:
        del os.environ[key]
    warnings.filterwarnings("ignore", message="Tried to parse AWS::CloudFormation::WaitConditionHandle")
    import logging

    logging.disable(logging.WARNING)
    rows: list[Row] = []
    for size in (int(s) for s in args.sizes.split(",")):
        measured = measure(size, args.orphans)
        print(f"built {size:,} namespaces in {measured[0].build_seconds:.1f} s", file=sys.stderr)
        rows.extend(measured)
    print(table(rows))
    print()
    for r in rows:
        calls = ", ".join(f"{k} {v}" for k, v in sorted(r.by_call.items()))
        print(f"{r.namespaces:,} {r.scenario}: {calls}")
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=1))
    clean = [r for r in rows if r.scenario.startswith("clean")]
    worst = max(r.per_namespace for r in clean)
    print(f"\nworst clean sweep: {worst:.3f} calls/namespace (target <= 0.5)")
    return 0 if worst <= 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
