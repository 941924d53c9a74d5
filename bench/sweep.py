"""Benchmark the sweep on the trees the pipeline really leaves: AWS calls and SSM reads per namespace,
and whether 30,000 namespaces (10,000 tenants x 3 environments) fit one 900 s Lambda run.

1. **Sample.** In moto, a tenant is bootstrapped and promoted through the real handlers (the Chalice
   test client, as ``tests/flow.py`` drives them) into each shape an environment can be in:

   * ``rest``: qa V1 then V2 completed, prod V1 completed, then V2 rolled back in prod (the steady state);
   * ``deploying``: ``rest``, then qa deploying V3 with a request for V4 queued behind it;
   * ``parked``: ``rest``, then qa's promotion of V3 parked for DB-instance headroom (RDS reports the
     quota full), as in a nightly burst.

   The sample tenant keeps 5 source snapshots and takes one nightly (its ``snapshot_schedule``). Each
   sample's SSM parameters (the tenant's, and its waiting-list entry), stacks and snapshots are kept.
2. **Replicate.** Each world copies a sample's tree to ``namespaces / 3`` tenants (names, values and tags
   rewritten to the tenant), stacks with a one-resource template (the sweep reads names, tags, status
   and times, not resources): ``rest`` is every tenant at rest; ``burst`` has every tenant's qa in
   flight, half deploying (with a queued request), half parked. Each tenant also gets the 7 final
   snapshots a nightly promotion leaves within the retention, and its EventBridge Scheduler schedule.
3. **Sweep** through the Lambda's own clients (``Deps.from_session``), counting every call with a botocore
   ``before-call`` hook. SSM reads go through the sweep's token bucket at 20 per second on a virtual
   clock: ``paced`` is the time that pacing costs. ``rest`` is swept clean, then with planted orphans
   (stacks, a ``DELETE_FAILED`` stack, db records, expired final snapshots), which must go.
4. **Project** to ``--target`` namespaces: the calls grow linearly (the table shows it); SSM time is the
   reads at ``--ssm-tps``; CloudFormation and RDS pages at AWS's page sizes and an assumed latency per
   page (CloudFormation, RDS, and Scheduler's ``ListSchedules``, which the sweep makes after its actions);
   the sweep's own CPU (parse and plan) as measured here.

Run: ``.venv/bin/python bench/sweep.py [--sizes 300,1500,3000] [--target 30000] [--ssm-tps 20]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends

from chalicelib.domain.names import KIND_TAG, Tenant, Version, dict_to_tags

ACCOUNT, REGION = "123456789012", "us-east-1"
SAMPLE = "xy-0146"
TEMPLATE = json.dumps({"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}})
V1, V2, V3, V4 = "20261120093000", "20261127200000", "20261128010000", "20261128020000"
OLDER = ("20261101000000", "20261105000000", "20261110000000")  # the tenant keeps 5 source snapshots
OLD_VERSION = "20261001000000"
SSM_READS = ("GetParameter", "GetParameters", "GetParametersByPath")
LAMBDA_TIMEOUT = 900.0
# AWS page sizes: GetParametersByPath 10 parameters (its maximum), DescribeDBSnapshots 100 (MaxRecords'
# maximum); DescribeStacks pages by response size (1 MB): at most 100 stacks a page is assumed.
RDS_PAGE, CFN_PAGE, SCHEDULER_PAGE = 100, 100, 100  # ListSchedules: MaxResults' maximum
ROLE = f"arn:aws:iam::{ACCOUNT}:role/tierlift-dev-scheduler"
BUS_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/tierlift-dev"


@dataclass
class Shape:
    """One sample tenant's tree as the pipeline left it."""

    name: str
    params: dict[str, str]  # name -> value, the tenant's own and its waiting-list entries
    stacks: list[dict[str, Any]]  # name, tags, status
    snapshots: list[dict[str, Any]]  # id, tags

    def per_tenant(self) -> dict[str, int]:
        envs: dict[str, int] = {}
        for name in self.params:
            parts = name.split("/")
            key = "waiting" if parts[2] == "waiting" else (parts[3] if len(parts) > 4 else "config")
            envs[key] = envs.get(key, 0) + 1
        return envs


# --------------------------------------------------------------------------------------------------
# 1. Samples, through the handlers
# --------------------------------------------------------------------------------------------------
def sample(shape: str) -> Shape:
    from chalicelib.deps import Deps, set_deps
    from chalicelib.settings import Settings
    from chalicelib.usecases import headroom
    from tests.conftest import Events, Outbox, ensure_bus, take_source_snapshot
    from tests.flow import Pipeline
    from tierlift.world import bootstrap_tenant

    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        config = bootstrap_tenant(session, SAMPLE)
        # A nightly source snapshot (EventBridge Scheduler): what makes the nightly burst.
        session.client("ssm").put_parameter(
            Name=f"/tierlift/{SAMPLE}/config",
            Value=json.dumps({**config, "snapshot_schedule": {"daily_at": "02:00"}}),
            Type="String",
            Overwrite=True,
        )
        deps = Deps.from_session(session, Settings())
        ensure_bus(session, deps.settings.event_bus)
        set_deps(deps)
        headroom.forget_cached()
        events = Events()
        events.session = session
        p = Pipeline(session, deps, Outbox(session), events)
        for version in (*OLDER, V1, V2):
            take_source_snapshot(session, version, SAMPLE)
        p.promote(V1)
        p.promote(V1, "prod")
        p.promote(V2)
        p.promote(V2, "prod", outcome="FAILED")
        if shape == "deploying":
            take_source_snapshot(session, V3, SAMPLE)
            take_source_snapshot(session, V4, SAMPLE)
            p.request("qa", V3)
            p.stack_event(V3, "CREATE_COMPLETE")
            assert p.request("qa", V4)["action"] == "queue"
        elif shape == "parked":
            take_source_snapshot(session, V3, SAMPLE)
            deps.rds.quotas = lambda: {"DBInstances": (40, 40)}  # type: ignore[method-assign]
            headroom.forget_cached()
            assert p.request("qa", V3)["action"] == "wait"
            assert p.parked() == "instance"
        headroom.forget_cached()
        ssm = session.client("ssm")
        params: dict[str, str] = {}
        for page in ssm.get_paginator("get_parameters_by_path").paginate(Path="/tierlift", Recursive=True):
            params.update({p["Name"]: p["Value"] for p in page["Parameters"]})
        cfn = session.client("cloudformation")
        stacks = [
            {
                "name": s["StackName"],
                "tags": {t["Key"]: t["Value"] for t in s.get("Tags", [])},
                "status": s["StackStatus"],
            }
            for page in cfn.get_paginator("describe_stacks").paginate()
            for s in page["Stacks"]
            if s["StackName"].startswith(SAMPLE) and s["StackStatus"] != "DELETE_COMPLETE"
        ]
        snapshots = [
            {"id": s["DBSnapshotIdentifier"], "tags": {t["Key"]: t["Value"] for t in s.get("TagList", [])}}
            for s in session.client("rds").describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
        ]
    return Shape(shape, params, stacks, snapshots)


# --------------------------------------------------------------------------------------------------
# 2. Replicas
# --------------------------------------------------------------------------------------------------
def tenant_name(i: int) -> str:
    return f"t{i // 10000:x}{'abcdefghij'[i // 1000 % 10]}-{i % 10000:04d}"


def replicate(session: boto3.session.Session, shape: Shape, tenant: str, finals: int) -> None:
    ssm, cfn, rds = session.client("ssm"), session.client("cloudformation"), session.client("rds")

    def swap(text: str) -> str:
        return text.replace(SAMPLE, tenant)

    for name, value in shape.params.items():
        if name.startswith(f"/tierlift/{SAMPLE}/") or name.endswith(f"-{SAMPLE}-qa"):
            ssm.put_parameter(Name=swap(name), Value=swap(value), Type="String")
    for stack in shape.stacks:
        tags = [{"Key": k, "Value": swap(v)} for k, v in stack["tags"].items()]
        cfn.create_stack(StackName=swap(stack["name"]), TemplateBody=TEMPLATE, Tags=tags)
    rds.create_db_instance(
        DBInstanceIdentifier=f"{tenant}-dev",
        DBInstanceClass="db.t3.micro",
        Engine="mysql",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="bench-only-password",
    )
    for snapshot in shape.snapshots:
        tags = [{"Key": k, "Value": swap(v)} for k, v in snapshot["tags"].items()]
        rds.create_db_snapshot(
            DBSnapshotIdentifier=swap(snapshot["id"]), DBInstanceIdentifier=f"{tenant}-dev", Tags=tags
        )
    # The final snapshots the deletes of replaced DB stacks left within the retention (moto makes none):
    # a nightly qa promotion leaves one a day, kept 7 days.
    qa = Tenant.parse(tenant).namespace("qa")
    for day in range(finals):
        version = Version(f"202610{day + 1:02d}120000")
        final_tags = dict_to_tags(qa.tags(version, **{KIND_TAG: "final-snapshot"}))
        name = f"{qa.stack_name(version)}-final"
        rds.create_db_snapshot(DBSnapshotIdentifier=name, DBInstanceIdentifier=f"{tenant}-dev", Tags=final_tags)


def build(session: boto3.session.Session, shapes: dict[str, Shape], scenario: str, tenants: int, finals: int) -> None:
    from chalicelib.adapters.scheduler import Schedules
    from chalicelib.domain.config import parse_config
    from chalicelib.domain.schedules import snapshot_schedule

    session.client("scheduler").create_schedule_group(Name="tierlift-dev")
    schedules = Schedules(session.client("scheduler"), "tierlift-dev", BUS_ARN, ROLE)
    config = json.loads(shapes["rest"].params[f"/tierlift/{SAMPLE}/config"])
    for i in range(tenants):
        tenant = tenant_name(i)  # each tenant's schedule, as tenant register puts it
        spec = snapshot_schedule(parse_config(Tenant.parse(tenant), {**config, "tenant": tenant}))
        assert spec is not None
        schedules.put(spec)
    for i in range(tenants):
        burst = shapes["deploying"] if i % 2 == 0 else shapes["parked"]
        replicate(session, shapes["rest"] if scenario == "rest" else burst, tenant_name(i), finals)


def plant_orphans(session: boto3.session.Session, tenants: int, count: int) -> list[str]:
    """Things for the sweep to remove, spread over the tenants: orphan qa stacks, prod db records
    without a stack, expired final snapshots, and one prod stack whose delete failed."""
    cfn, ssm, rds = session.client("cloudformation"), session.client("ssm"), session.client("rds")
    stacks: list[str] = []
    step = max(1, tenants // max(1, count))
    picks = [Tenant.parse(tenant_name(i)) for i in range(0, tenants, step)][:count]
    for tenant in picks:
        qa, prod = tenant.namespace("qa"), tenant.namespace("prod")
        name = qa.stack_name(Version(OLD_VERSION))
        cfn.create_stack(StackName=name, TemplateBody=TEMPLATE, Tags=dict_to_tags(qa.tags(Version(OLD_VERSION))))
        stacks.append(name)
        ssm.put_parameter(Name=f"/tierlift/{tenant}/prod/db/{OLD_VERSION}", Value="{}", Type="String")
        tags = prod.tags(Version(OLD_VERSION), **{KIND_TAG: "final-snapshot"})
        rds.create_db_snapshot(
            DBSnapshotIdentifier=f"{prod.stack_name(Version(OLD_VERSION))}-final",
            DBInstanceIdentifier=f"{tenant}-dev",
            Tags=dict_to_tags(tags),
        )
    # Those final snapshots were left 8 days ago: past the retention (7 days), the others within it.
    from moto.rds.models import rds_backends

    snapshots = rds_backends[ACCOUNT][REGION].database_snapshots
    for tenant in picks:
        name = f"{tenant.namespace('prod').stack_name(Version(OLD_VERSION))}-final"
        snapshots[name].created = snapshots[name].created - timedelta(days=8)
    failed = picks[0].namespace("prod").stack_name(Version(OLD_VERSION))
    cfn.create_stack(
        StackName=failed,
        TemplateBody=TEMPLATE,
        Tags=dict_to_tags(picks[0].namespace("prod").tags(Version(OLD_VERSION))),
    )
    backend = cloudformation_backends[ACCOUNT][REGION]
    next(s for s in backend.stacks.values() if s.name == failed).status = "DELETE_FAILED"
    return [*stacks, failed]


# --------------------------------------------------------------------------------------------------
# 3. Sweeps
# --------------------------------------------------------------------------------------------------
class Counter:
    """Every AWS call the sweep's clients make (botocore ``before-call``)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, model: Any, **_: Any) -> None:
        key = f"{model.service_model.service_name}:{model.name}"
        self.calls[key] = self.calls.get(key, 0) + 1

    def of(self, service: str, names: tuple[str, ...] | None = None) -> int:
        return sum(
            n
            for k, n in self.calls.items()
            if k.startswith(service + ":") and (names is None or k.split(":")[1] in names)
        )


class VirtualClock:
    """The token bucket's clock: sleeping advances it (the pacing is counted, not waited for)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        # A real clock always moves on; a float one must too (a wait of 1e-18 s would not move 5.0).
        self.now += max(seconds, 1e-9)


@dataclass
class Row:
    namespaces: int
    world: str
    scenario: str
    params: int
    stacks: int
    snapshots: int
    calls: int
    ssm_reads: int
    paced: float  # seconds the sweep's SSM pacing costs at --ssm-tps
    seconds: float  # wall time in moto
    cpu: float  # parse + plan of the walk, measured apart from moto
    actions: int
    reconciled: int
    by_call: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def per_namespace(self) -> float:
        return self.calls / self.namespaces

    @property
    def reads_per_namespace(self) -> float:
        return self.ssm_reads / self.namespaces


def sweep(
    session: boto3.session.Session, namespaces: int, world: str, scenario: str, tps: float, ahead: timedelta
) -> Row:
    from chalicelib.adapters.ssm import TokenBucket
    from chalicelib.deps import Deps, set_deps, utcnow
    from chalicelib.domain.sweep_plan import Facts, mark_parked, parse_parameters, plan
    from chalicelib.invocation import invocation
    from chalicelib.settings import Settings
    from chalicelib.usecases import headroom
    from chalicelib.usecases.sweep import run_sweep

    headroom.forget_cached()

    deps = Deps.from_session(
        session, Settings(ssm_reads_per_second=tps, scheduler_role_arn=ROLE, event_bus_arn=BUS_ARN)
    )
    deps.clock = lambda: utcnow() + ahead
    if world == "burst":  # what a burst is: RDS's DB-instance quota is full (moto does not implement it)
        deps.rds.quotas = lambda: {"DBInstances": (40, 40), "ManualSnapshots": (10, 100)}  # type: ignore[method-assign]
    set_deps(deps)
    clock = VirtualClock()
    deps.store.parameters.bucket = TokenBucket(tps, clock=clock, sleep=clock.sleep)  # type: ignore[attr-defined]
    counter = Counter()
    assert deps.schedules is not None
    clients = (
        deps.store.parameters.client,
        deps.rds.client,
        deps.stacks.client,
        deps.services.client,
        deps.bus.client,
        deps.schedules.client,
    )
    for client in clients:
        client.meta.events.register("before-call.*.*", counter)
    started = time.perf_counter()
    with invocation(f"bench-sweep-{uuid.uuid4()}"):
        result = run_sweep(deps)
    seconds = time.perf_counter() - started
    for client in clients:
        client.meta.events.unregister("before-call.*.*", counter)
    if result.errors:
        raise SystemExit(f"sweep errors: {result.errors[:5]}")
    if result.schedules.get("created") or result.schedules.get("deleted"):
        raise SystemExit(f"the sweep changed snapshot schedules: {result.schedules}")
    # The sweep's own CPU on this walk: parse and plan again, outside moto.
    deps.store.parameters.bucket = None  # type: ignore[attr-defined]
    listing = deps.store.parameters.list(deps.store.root)
    begun = time.perf_counter()
    tenants, parsed = parse_parameters(deps.store.root, listing)
    waiting = [(w.namespace.name, w.promotion_id, w.stack) for w in deps.store.waiting_in(listing)]
    facts = Facts(deps.clock(), tenants, parsed, [], [], parked=mark_parked(parsed, waiting), stacks_known=False)
    plan(facts, deps.settings)
    cpu = time.perf_counter() - begun
    return Row(
        namespaces=namespaces,
        world=world,
        scenario=scenario,
        params=len(listing),
        stacks=result.stacks,
        snapshots=result.snapshots,
        calls=sum(counter.calls.values()),
        ssm_reads=counter.of("ssm", SSM_READS),
        paced=clock.now,
        seconds=seconds,
        cpu=cpu,
        actions=sum(1 for e in result.entries if e.status == "done"),
        reconciled=len(result.by_kind("reconcile")),
        by_call=dict(sorted(counter.calls.items())),
        timings=dict(result.timings),
    )


def measure(shapes: dict[str, Shape], namespaces: int, orphans: int, tps: float, finals: int) -> list[Row]:
    tenants = namespaces // 3
    rows: list[Row] = []
    for world in ("rest", "burst"):
        with mock_aws():
            session = boto3.session.Session(region_name=REGION)
            session.client("events").create_event_bus(Name="tierlift-dev")
            started = time.perf_counter()
            build(session, shapes, world, tenants, finals)
            print(
                f"built {world} world of {namespaces:,} namespaces in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
            # 20 minutes on: nothing in flight is stuck (deploying times out after an hour; parked waits)
            clean = sweep(session, namespaces, world, "clean", tps, timedelta(minutes=20))
            rows.append(clean)
            if world == "rest":
                assert clean.actions == 0 and clean.reconciled == 0, "the steady state had something to do"
                planted = plant_orphans(session, tenants, orphans)
                # 2 hours on: the orphan stacks past the grace period
                rows.append(sweep(session, namespaces, world, "orphans", tps, timedelta(hours=2)))
                pages = session.client("cloudformation").get_paginator("describe_stacks").paginate()
                live = {
                    s["StackName"] for page in pages for s in page["Stacks"] if s["StackStatus"] != "DELETE_COMPLETE"
                }
                assert not live & set(planted), "planted orphan stacks survived the sweep"
                expected = tenants * len(shapes["rest"].stacks) + 4  # the sample's per tenant, the common ones
                assert len(live) >= expected - 4, "the sweep deleted a stack it should have kept"
            else:
                assert clean.actions == 0 and clean.reconciled == 0, "the burst's promotions were touched"
    return rows


# --------------------------------------------------------------------------------------------------
# 4. Projection
# --------------------------------------------------------------------------------------------------
@dataclass
class Projection:
    world: str
    namespaces: int
    params: int
    ssm_reads: int
    ssm_seconds: float
    stack_pages: int
    snapshot_pages: int
    stack_seconds: float
    snapshot_seconds: float
    schedule_pages: int
    schedule_seconds: float
    cpu_seconds: float

    @property
    def serial(self) -> float:
        """The three listings one after the other, then parse and plan."""
        listings = self.ssm_seconds + self.stack_seconds + self.snapshot_seconds
        return listings + self.cpu_seconds + self.schedule_seconds

    @property
    def concurrent(self) -> float:
        """As ``sweep.gather`` runs them: stacks and snapshots listed beside the SSM walk."""
        listings = max(self.ssm_seconds, self.stack_seconds, self.snapshot_seconds)
        return listings + self.cpu_seconds + self.schedule_seconds


def project(
    row: Row, target: int, tps: float, cfn_latency: float, rds_latency: float, scheduler_latency: float
) -> Projection:
    scale = target / row.namespaces
    reads = round(row.ssm_reads * scale)
    stack_pages = -(-round(row.stacks * scale) // CFN_PAGE)
    snapshot_pages = -(-round(row.snapshots * scale) // RDS_PAGE)
    return Projection(
        world=row.world,
        namespaces=target,
        params=round(row.params * scale),
        ssm_reads=reads,
        ssm_seconds=reads / tps,
        stack_pages=stack_pages,
        snapshot_pages=snapshot_pages,
        stack_seconds=stack_pages * cfn_latency,
        snapshot_seconds=snapshot_pages * rds_latency,
        schedule_pages=-(-(target // 3) // SCHEDULER_PAGE),
        schedule_seconds=-(-(target // 3) // SCHEDULER_PAGE) * scheduler_latency,
        cpu_seconds=row.cpu * scale,
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| namespaces | world | sweep | parameters | stacks | snapshots | AWS calls | calls/ns | SSM reads | reads/ns "
        "| paced at TPS | wall (moto) | parse+plan | done | reconciled |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.namespaces:,} | {r.world} | {r.scenario} | {r.params:,} | {r.stacks:,} | {r.snapshots:,} "
            f"| {r.calls:,} | {r.per_namespace:.3f} | {r.ssm_reads:,} | {r.reads_per_namespace:.3f} "
            f"| {r.paced:.1f} s | {r.seconds:.1f} s "
            f"| {r.cpu * 1000:,.0f} ms | {r.actions} | {r.reconciled} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="300,1500,3000", help="namespaces per world, comma separated")
    parser.add_argument("--target", type=int, default=30000, help="namespaces to project to")
    parser.add_argument("--ssm-tps", type=float, default=20.0, help="SSM reads per second the sweep may make")
    parser.add_argument("--cfn-latency", type=float, default=0.5, help="assumed seconds per DescribeStacks page")
    parser.add_argument("--rds-latency", type=float, default=0.3, help="assumed seconds per DescribeDBSnapshots page")
    parser.add_argument("--scheduler-latency", type=float, default=0.2, help="assumed seconds per ListSchedules page")
    parser.add_argument("--orphans", type=int, default=5, help="orphan stacks (and records, snapshots) planted")
    parser.add_argument("--finals", type=int, default=7, help="final snapshots per tenant within the retention")
    parser.add_argument("--json", action="store_true", help="also print every row as JSON, with calls by API")
    args = parser.parse_args(argv)
    for key in [k for k in os.environ if k.startswith(("TIERLIFT_", "AWS_"))]:
        del os.environ[key]
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION=REGION)
    os.environ.setdefault("MOTO_RDS_SNAPSHOT_LIMIT", "1000000")  # an account this size has raised quotas
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    warnings.filterwarnings("ignore")
    logging.disable(logging.CRITICAL)

    shapes = {name: sample(name) for name in ("rest", "deploying", "parked")}
    print("Trees the pipeline leaves (parameters per tenant, by environment):")
    for shape in shapes.values():
        print(
            f"  {shape.name:9} {json.dumps(shape.per_tenant(), sort_keys=True)}  "
            f"stacks {len(shape.stacks)}, snapshots {len(shape.snapshots)}"
        )
    rest = shapes["rest"]
    print("  rest, qa:  " + ", ".join(sorted(n.split("/qa/")[1] for n in rest.params if "/qa/" in n)))
    print()
    rows: list[Row] = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.extend(measure(shapes, size, args.orphans, args.ssm_tps, args.finals))
    print(table(rows))
    print()
    for r in rows:
        print(f"{r.namespaces:,} {r.world} {r.scenario}: " + ", ".join(f"{k} {v}" for k, v in r.by_call.items()))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    print()
    largest = max(r.namespaces for r in rows)
    budget = LAMBDA_TIMEOUT * 2 / 3  # gather, plan and the schedules' listing; the last third is left for acting
    verdict = 0
    for world in ("rest", "burst"):
        row = next(r for r in rows if r.world == world and r.scenario == "clean" and r.namespaces == largest)
        p = project(row, args.target, args.ssm_tps, args.cfn_latency, args.rds_latency, args.scheduler_latency)
        fits = p.concurrent <= budget
        verdict |= 0 if fits else 1
        print(f"{args.target:,} namespaces, {world} (scaled from {largest:,}):")
        print(f"  SSM: {p.params:,} parameters, {p.ssm_reads:,} reads = {p.ssm_seconds:.0f} s at {args.ssm_tps:g} TPS")
        print(f"  CloudFormation: {p.stack_pages} DescribeStacks pages = {p.stack_seconds:.0f} s")
        print(f"  RDS: {p.snapshot_pages} DescribeDBSnapshots pages = {p.snapshot_seconds:.0f} s")
        print(
            f"  EventBridge Scheduler: {p.schedule_pages} ListSchedules pages = {p.schedule_seconds:.0f} s "
            "(after the actions)"
        )
        print(f"  parse + plan: {p.cpu_seconds:.1f} s")
        print(
            f"  gather, plan, schedules: {p.concurrent:.0f} s (the listings one after the other: {p.serial:.0f} s); "
            f"budget {budget:.0f} s (2/3 of {LAMBDA_TIMEOUT:.0f} s): "
            + (
                f"fits one run, {LAMBDA_TIMEOUT / p.concurrent:.1f}x under the timeout"
                if fits
                else "does NOT fit: shard"
            )
        )
    print(
        f"(pages at {args.cfn_latency:g} s for CloudFormation, {args.rds_latency:g} s for RDS, "
        f"{args.scheduler_latency:g} s for Scheduler: assumed, not measured)"
    )
    clean = [r for r in rows if r.world == "rest" and r.scenario == "clean"]
    print("SSM reads per namespace at rest: " + ", ".join(f"{r.reads_per_namespace:.3f}" for r in clean))
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
