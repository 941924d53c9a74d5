"""One promotion on the local cloud, twice: tierlift (event-driven) beside a waiter-based pipeline.

Both promote a fresh dev snapshot to qa where a previous version is active (so its DB stack is deleted
at the end), on the same local cloud (``tierlift/local``: moto's server, the emulator's scaled RDS,
CloudFormation and ECS durations, delivery to the real handlers), started in this process. No
``mock_aws`` here.

- **tierlift**: ``Snapshot Requested`` is put on the bus; the cloud delivers every event to the Chalice
  handlers until ``Promotion Completed`` and the old stack's ``DELETE_COMPLETE`` have been handled.
  Calls are the cloud's count of the handlers' AWS calls; compute is the sum of handler run times.
- **waiters**: one process does the same steps in sequence with boto3 clients, as a pipeline built on
  boto3's waiters would: read the config and ``active`` from SSM; ``CreateDBSnapshot`` and the
  ``db_snapshot_available`` waiter; ``CreateStack`` (tierlift's DB template and parameters) and
  ``stack_create_complete``; ``DescribeStacks`` for the endpoint; the ``db/<version>`` record and
  ``active`` in SSM; the service's task definition with the new DB settings, ``UpdateService`` and
  ``services_stable``; ``DeleteStack`` of the previous version and ``stack_delete_complete``; its
  ``db/<version>`` record deleted. Each waiter polls at its published delay (read from botocore's
  waiter model) divided by the cloud's speed, with its published ``MaxAttempts``, so it sees the
  scaled durations as AWS's waiters see the real ones. It keeps its state under its own SSM root
  (``/waiters``), so tierlift's handlers ignore its resources. Its calls are counted with a botocore
  ``before-call`` hook; polls are the calls a waiter made; compute held is its wall time x speed
  (the process lives, and is billed, for the whole promotion).

Then both are extrapolated to AWS's durations (``--snapshot-minutes``, ``--restore-minutes``,
``--rollout-minutes``, ``--delete-minutes``): a waiter polls at once, then every ``delay`` seconds until
it sees the end, so a step of ``D`` seconds costs ``ceil(D / delay) + 1`` polls and holds the process
``ceil(D / delay) x delay`` seconds; the other calls do not depend on durations. tierlift's calls and
compute do not depend on durations at all (nothing polls).

Run: ``.venv/bin/python bench/waiters.py [--speed 300] [--restore-minutes 15] [--rollout-minutes 5] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TIERLIFT_TENANT = "xy-0146"
WAITER_TENANT = "ab-0001"
WAITER_ROOT = "/waiters"  # the waiter pipeline's own SSM root: tierlift's handlers do not know its tenant
ENVIRONMENT = "qa"
SSM_WRITES = ("ssm:PutParameter", "ssm:DeleteParameter", "ssm:DeleteParameters")
# The pipeline's steps, the boto3 waiter each one waits with, and the duration each waits for.
STEPS = (
    ("snapshot", "rds", "db_snapshot_available"),
    ("restore", "cloudformation", "stack_create_complete"),
    ("rollout", "ecs", "services_stable"),
    ("delete", "cloudformation", "stack_delete_complete"),
)


@dataclass(frozen=True)
class Published:
    """A boto3 waiter's published configuration (botocore's waiter model)."""

    delay: float
    max_attempts: int


def published_waiters() -> dict[str, Published]:
    """Delay and MaxAttempts of each step's waiter, from botocore's waiter models (no AWS call)."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    out: dict[str, Published] = {}
    for _, service, name in STEPS:
        model = session.get_waiter_model(service)
        config = model.get_waiter(next(w for w in model.waiter_names if xform_name(w) == name))
        out[name] = Published(float(config.delay), int(config.max_attempts))
    return out


def polls_for(duration: float, delay: float) -> int:
    """Polls a waiter makes for a step that ends ``duration`` seconds after it starts waiting.

    It polls at once, then every ``delay`` seconds; the first poll at or after the end succeeds.
    """
    if duration <= 0:
        return 1
    return math.ceil(duration / delay) + 1


def extrapolate(
    other_calls: int, durations: dict[str, float], waiters: dict[str, Published], other_seconds: float = 0.0
) -> dict[str, Any]:
    """The waiter pipeline at the given step durations (AWS seconds, by step name of ``STEPS``).

    ``other_calls`` are the calls that are not polls (the same at any duration); ``other_seconds`` the
    time the process spends outside its waiters. Returns polls per waiter, calls, the seconds the
    process is held (its waits plus ``other_seconds``), and the waiters that would give up first
    (more polls than their ``MaxAttempts``).
    """
    polls: dict[str, int] = {}
    held = other_seconds
    for step, _, name in STEPS:
        published = waiters[name]
        polls[name] = polls_for(durations[step], published.delay)
        held += (polls[name] - 1) * published.delay
    return {
        "polls": polls,
        "calls": other_calls + sum(polls.values()),
        "compute_seconds_held": round(held, 1),
        "gives_up": sorted(n for n, p in polls.items() if p > waiters[n].max_attempts),
    }


# --------------------------------------------------------------------------------------------------
# the waiter-based pipeline
# --------------------------------------------------------------------------------------------------
class CallLog:
    """A botocore ``before-call`` hook: every call by operation, and which waiter (if any) made it."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.polls: Counter[str] = Counter()
        self.waiting: str | None = None
        self.waited: defaultdict[str, float] = defaultdict(float)  # wall seconds in each waiter

    def __call__(self, model: Any = None, **_: Any) -> None:
        if model is None:
            return
        self.calls[f"{model.service_model.service_name}:{model.name}"] += 1
        if self.waiting is not None:
            self.polls[self.waiting] += 1

    def wait(self, client: Any, name: str, delay: float, max_attempts: int, **kwargs: Any) -> None:
        self.waiting = name
        started = time.perf_counter()
        try:
            client.get_waiter(name).wait(WaiterConfig={"Delay": delay, "MaxAttempts": max_attempts}, **kwargs)
        finally:
            self.waited[name] += time.perf_counter() - started
            self.waiting = None


def waiter_pipeline(session: Any, tenant: str, speed: float, waiters: dict[str, Published], log: CallLog) -> str:
    """Promote a fresh snapshot of ``tenant``'s dev DB to qa, step after step, waiting with boto3's waiters."""
    from chalicelib.adapters.aws import Stacks
    from chalicelib.adapters.ssm import SsmStateStore
    from chalicelib.domain.ecs_spec import task_definition_spec
    from chalicelib.domain.model import DbRecord
    from chalicelib.domain.names import Namespace, Tenant, Version
    from chalicelib.settings import DEFAULT_TEMPLATE

    session.events.register("before-call", log)
    ssm, rds = session.client("ssm"), session.client("rds")
    cfn, ecs = session.client("cloudformation"), session.client("ecs")

    def wait(client: Any, name: str, **kwargs: Any) -> None:
        published = waiters[name]
        log.wait(client, name, published.delay / speed, published.max_attempts, **kwargs)

    store = SsmStateStore(ssm, WAITER_ROOT)
    config = store.get_config(Tenant.parse(tenant))
    ns = Namespace.parse(f"{tenant}-{ENVIRONMENT}")
    target = config.target(ENVIRONMENT)
    previous = store.get_active(ns)
    version = Version.from_datetime(datetime.now(UTC))
    snapshot = config.source.snapshot_id(version)

    rds.create_db_snapshot(DBSnapshotIdentifier=snapshot, DBInstanceIdentifier=config.source_db_instance)
    wait(rds, "db_snapshot_available", DBSnapshotIdentifier=snapshot)

    name = ns.stack_name(version)
    parameters = {  # what chalicelib.usecases.cutover.stack_parameters gives tierlift's stacks
        "Tenant": ns.tenant.name,
        "Environment": ns.environment,
        "Customer": ns.tenant.customer,
        "Project": ns.tenant.project,
        "Version": version.value,
        "SnapshotIdentifier": snapshot,
        "InstanceIdentifier": ns.instance_id(version),
        "InstanceClass": target.db.instance_class,
        "SubnetGroup": target.db.subnet_group,
        "SecurityGroups": ",".join(target.db.security_groups),
    }
    cfn.create_stack(
        StackName=name,
        TemplateBody=DEFAULT_TEMPLATE.read_text(encoding="utf-8"),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Tags=[{"Key": k, "Value": v} for k, v in ns.tags(version).items()],
        OnFailure="ROLLBACK",
    )
    wait(cfn, "stack_create_complete", StackName=name)
    outputs = Stacks.outputs(cfn.describe_stacks(StackName=name)["Stacks"][0])
    db = DbRecord(
        stack=name,
        instance=outputs.get("InstanceId") or ns.instance_id(version),
        endpoint=outputs["EndpointAddress"],
        port=int(outputs["EndpointPort"]),
        snapshot=snapshot,
        version=version.value,
        secret_arn=outputs.get("MasterUserSecretArn") or target.db.secret_arn,
        database=target.db.database,
    )
    store.put_db(ns, version, db)
    store.set_active(ns, version, was=previous)

    service = ecs.describe_services(cluster=target.cluster, services=[target.service])["services"][0]
    current = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    accepted = ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape.members
    spec = task_definition_spec(
        current,
        ns=ns,
        version=version,
        target=target,
        db=db,
        db_parameter=store.db_path(ns, version),
        image=None,
        accepted_keys=tuple(accepted),
    )
    task_definition = ecs.register_task_definition(**spec)["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=target.cluster, service=target.service, taskDefinition=task_definition)
    wait(ecs, "services_stable", cluster=target.cluster, services=[target.service])

    if previous is not None:
        old = ns.stack_name(previous)
        cfn.delete_stack(StackName=old)
        wait(cfn, "stack_delete_complete", StackName=old)
        store.delete_db(ns, previous)
    return version.value


# --------------------------------------------------------------------------------------------------
# the bench
# --------------------------------------------------------------------------------------------------
def _bus(cloud: Any, since: int) -> list[dict[str, Any]]:
    """tierlift's events on the bus from the timeline's entry number ``since`` on."""
    return [
        e.event
        for e in cloud.timeline.snapshot()[since:]
        if e.kind == "event" and e.event is not None and e.event.get("source") == "tierlift"
    ]


def _ended(cloud: Any, since: int) -> str | None:
    for event in _bus(cloud, since):
        detail = event.get("detail") or {}
        if detail.get("tenant") != TIERLIFT_TENANT or detail.get("environment") != ENVIRONMENT:
            continue
        kind = str(event.get("detail-type"))
        if kind in ("Promotion Completed", "Promotion Failed", "Promotion Rolled Back", "Promotion Rejected"):
            return kind
    return None


def _snapshot_requested(cloud: Any) -> None:
    detail = json.dumps({"tenant": TIERLIFT_TENANT, "requested_by": "bench"})
    cloud.client("events").put_events(
        Entries=[
            {"Source": "tierlift", "DetailType": "Snapshot Requested", "Detail": detail, "EventBusName": cloud.bus}
        ]
    )


def _wait_ended(cloud: Any, since: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = _ended(cloud, since)
        if outcome is not None:
            return outcome
        time.sleep(0.01)
    raise TimeoutError(f"tierlift's promotion did not end within {timeout:.0f} s")


def _label(record: dict[str, Any]) -> str:
    """The handler, with the status or event it handled: ``stack_status DELETE_COMPLETE``."""
    detail = record["event"].get("detail") or {}
    what = (
        (detail.get("status-details") or {}).get("status")
        or detail.get("eventName", "").removeprefix("SERVICE_DEPLOYMENT_")
        or detail.get("EventID")
    )
    return f"{record['handler']} {what}" if what else str(record["handler"])


def _entries(cloud: Any) -> int:
    return len(cloud.timeline.snapshot())


def _first_run(session: Any, speed: float, waiters: dict[str, Published], versions: list[str]) -> None:
    versions.append(waiter_pipeline(session, WAITER_TENANT, speed, waiters, CallLog()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import boto3

    from tierlift.local import LocalCloud
    from tierlift.local.emulator import Durations
    from tierlift.world import bootstrap_tenant

    waiters = published_waiters()
    cloud_durations = Durations()
    aws = {
        "snapshot": cloud_durations.snapshot,
        "restore": cloud_durations.stack_create,
        "rollout": cloud_durations.deployment,
        "delete": cloud_durations.stack_delete,
    }
    cloud = LocalCloud(
        port=0,
        speed=args.speed,
        schedules=False,  # no sweep: it would add its own calls to tierlift's
        durations=cloud_durations,
        handler_log=Path("/tmp/tierlift-local/waiters-handlers.log"),
    )
    with cloud:
        world = boto3.session.Session(region_name=cloud.region)
        # The world's stacks (common, environments) are not measured: let them complete 20 times faster.
        cloud.emulator.speed = args.speed * 20
        bootstrap_tenant(world, TIERLIFT_TENANT, automatic=(ENVIRONMENT,))
        bootstrap_tenant(world, WAITER_TENANT, ssm_root=WAITER_ROOT, automatic=())
        cloud.emulator.speed = args.speed

        # The previous version, for both: tierlift's first promotion and the waiter pipeline's first run.
        versions: list[str] = []
        first = threading.Thread(
            target=_first_run,
            args=(boto3.session.Session(region_name=cloud.region), args.speed, waiters, versions),
        )
        since = _entries(cloud)
        _snapshot_requested(cloud)
        first.start()
        outcome = _wait_ended(cloud, since, args.timeout)
        first.join(args.timeout)
        if outcome != "Promotion Completed" or not versions:
            raise RuntimeError(f"the previous version was not set up: tierlift {outcome}, waiters {versions}")
        cloud.settle(timeout=args.timeout)
        time.sleep(1.05)  # versions are whole UTC seconds

        # (a) tierlift, event-driven
        records: list[dict[str, Any]] = []

        def handled(record: dict[str, Any]) -> None:
            records.append({**record, "ended": time.perf_counter()})

        cloud.on_invocation.append(handled)
        calls_before = Counter(cloud.calls_by_operation)
        since = _entries(cloud)
        started = time.perf_counter()
        _snapshot_requested(cloud)
        outcome = _wait_ended(cloud, since, args.timeout)
        completed = time.perf_counter() - started
        cloud.settle(timeout=args.timeout)  # the old stack's DELETE_COMPLETE and the final snapshot handled
        cloud.on_invocation.remove(handled)
        gone = [
            r["ended"] - started
            for r in records
            if r["handler"] == "stack_status"
            and ((r["event"].get("detail") or {}).get("status-details") or {}).get("status") == "DELETE_COMPLETE"
        ]
        if not gone:
            raise RuntimeError("tierlift's promotion did not delete the previous version's stack")
        calls = Counter(cloud.calls_by_operation)
        calls.subtract(calls_before)
        by_handler: dict[str, dict[str, Any]] = {}
        for record in records:
            row = by_handler.setdefault(_label(record), {"invocations": 0, "calls": 0, "seconds": 0.0})
            row["invocations"] += 1
            row["calls"] += record["calls"]
            row["seconds"] += record["seconds"]
        ours = {
            "outcome": outcome,
            "calls": sum(calls.values()),
            "ssm_writes": sum(n for op, n in calls.items() if op in SSM_WRITES),
            "polls": 0,
            "invocations": len(records),
            "compute_seconds": round(sum(r["seconds"] for r in records), 3),
            "errors": sum(1 for r in records if r["error"]),
            "wall_seconds_to_completed": round(completed, 2),
            "aws_seconds_to_completed": round(completed * args.speed),
            "aws_seconds_to_old_stack_gone": round(min(gone) * args.speed),
            "by_handler": {
                h: {**v, "seconds": round(v["seconds"], 3)} for h, v in sorted(by_handler.items(), key=lambda x: x[0])
            },
            "by_operation": dict(sorted((k, v) for k, v in calls.items() if v)),
        }

        # (b) the waiter-based pipeline
        log = CallLog()
        started = time.perf_counter()
        version = waiter_pipeline(
            boto3.session.Session(region_name=cloud.region), WAITER_TENANT, args.speed, waiters, log
        )
        wall = time.perf_counter() - started
        active = world.client("ssm").get_parameter(Name=f"{WAITER_ROOT}/{WAITER_TENANT}/{ENVIRONMENT}/active")
        if active["Parameter"]["Value"] != version:
            raise RuntimeError("the waiter pipeline did not make its version active")
        polls = sum(log.polls.values())
        other_calls = sum(log.calls.values()) - polls
        model = extrapolate(other_calls, aws, waiters)
        per_waiter: dict[str, dict[str, Any]] = {}
        for step, _, name in STEPS:
            published, made = waiters[name], log.polls[name]
            # A waiter's time is its polls' round trips and the sleeps between them; the model leaves the
            # round trip out (a few ms here, but x speed in AWS time; ~0.05 s against 15-30 s in AWS).
            round_trip = (log.waited[name] - (made - 1) * published.delay / args.speed) / max(1, made)
            per_waiter[name] = {
                "delay": published.delay,
                "scaled_delay": round(published.delay / args.speed, 4),
                "max_attempts": published.max_attempts,
                "waited_for_aws_seconds": aws[step],
                "polls": made,
                "polls_expected": model["polls"][name],
                "round_trip_ms": round(1000 * round_trip, 1),
                "polls_expected_with_round_trip": polls_for(aws[step], published.delay + round_trip * args.speed),
            }
        theirs = {
            "calls": sum(log.calls.values()),
            "ssm_writes": sum(n for op, n in log.calls.items() if op in SSM_WRITES),
            "polls": polls,
            "other_calls": other_calls,
            "wall_seconds": round(wall, 2),
            "compute_seconds_held": round(wall * args.speed),
            "outside_waiters_seconds": round(wall - sum(log.waited.values()), 3),
            "waiters": per_waiter,
            "by_operation": dict(sorted(log.calls.items())),
        }
        cloud.settle(timeout=args.timeout)

    durations = {
        "snapshot": args.snapshot_minutes * 60,
        "restore": args.restore_minutes * 60,
        "rollout": args.rollout_minutes * 60,
        "delete": args.delete_minutes * 60,
    }
    projected = extrapolate(other_calls, durations, waiters, theirs["outside_waiters_seconds"])
    return {
        "command": f"bench/waiters.py --speed {args.speed:g} --snapshot-minutes {args.snapshot_minutes:g} "
        f"--restore-minutes {args.restore_minutes:g} --rollout-minutes {args.rollout_minutes:g} "
        f"--delete-minutes {args.delete_minutes:g}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "speed": args.speed,
        "measured": {
            "durations_aws_seconds": aws,
            "tierlift": ours,
            "waiters": theirs,
        },
        "extrapolated": {
            "durations_aws_seconds": durations,
            "waiters": projected,
            "tierlift": {"calls": ours["calls"], "polls": 0, "compute_seconds": ours["compute_seconds"]},
        },
    }


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


def table(report: dict[str, Any]) -> str:
    m, x = report["measured"], report["extrapolated"]
    ours, theirs, projected = m["tierlift"], m["waiters"], x["waiters"]
    steps = ", ".join(f"{k} {_minutes(v)}" for k, v in m["durations_aws_seconds"].items())
    future = ", ".join(f"{k} {_minutes(v)}" for k, v in x["durations_aws_seconds"].items())
    lines = [
        f"{report['command']}  ({report['date']})",
        "",
        f"measured on the local cloud at x{report['speed']:g} ({steps}):",
        f"  {'':28} {'AWS calls':>9} {'polls':>6} {'SSM writes':>10} {'compute held':>22}",
        f"  {'waiter-based, sequential':28} {theirs['calls']:>9} {theirs['polls']:>6} {theirs['ssm_writes']:>10} "
        f"{theirs['compute_seconds_held']:>8} s (wall x speed)",
        f"  {'tierlift, event-driven':28} {ours['calls']:>9} {0:>6} {ours['ssm_writes']:>10} "
        f"{ours['compute_seconds']:>8.3f} s ({ours['invocations']} invocations)",
        "",
        "  waiter polls: measured / expected from the published delay / expected counting each poll's round trip",
    ]
    for name, w in theirs["waiters"].items():
        lines.append(
            f"    {name:24} {w['polls']:>3} / {w['polls_expected']:>3} / {w['polls_expected_with_round_trip']:>3}  "
            f"delay {w['delay']:g} s (x{report['speed']:g}: {w['scaled_delay']:g} s), round trip "
            f"{w['round_trip_ms']:g} ms, waited for {_minutes(w['waited_for_aws_seconds'])}"
        )
    lines.append("    " + ", ".join(f"{k} {v}" for k, v in theirs["by_operation"].items()))
    lines.append(
        f"  tierlift: {ours['outcome']} after {ours['aws_seconds_to_completed']} AWS s, old stack gone after "
        f"{ours['aws_seconds_to_old_stack_gone']} AWS s; handler errors {ours['errors']}"
    )
    for handler, row in ours["by_handler"].items():
        lines.append(
            f"    {handler:40} {row['invocations']:>2} invocations {row['calls']:>3} calls {row['seconds']:.3f} s"
        )
    lines.append("    " + ", ".join(f"{k} {v}" for k, v in ours["by_operation"].items()))
    lines += [
        "",
        f"extrapolated ({future}):",
        f"  {'':28} {'AWS calls':>9} {'polls':>6} {'compute held':>14}",
        f"  {'waiter-based, sequential':28} {projected['calls']:>9} {sum(projected['polls'].values()):>6} "
        f"{projected['compute_seconds_held']:>12} s",
        f"  {'tierlift, event-driven':28} {x['tierlift']['calls']:>9} {0:>6} "
        f"{x['tierlift']['compute_seconds']:>12.3f} s",
        "  polls: " + ", ".join(f"{k} {v}" for k, v in projected["polls"].items()),
    ]
    if projected["gives_up"]:
        lines.append(f"  past MaxAttempts (the waiter raises WaiterError): {', '.join(projected['gives_up'])}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=300.0, help="AWS seconds per local second")
    parser.add_argument("--snapshot-minutes", type=float, default=5.0)
    parser.add_argument("--restore-minutes", type=float, default=15.0)
    parser.add_argument("--rollout-minutes", type=float, default=5.0)
    parser.add_argument("--delete-minutes", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds (wall) to wait for each step")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if report["measured"]["tierlift"]["outcome"] == "Promotion Completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
