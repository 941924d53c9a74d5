"""``tierlift`` (or ``python -m tierlift``): the operator's commands against any endpoint, the local
cloud and the demo.

Common flags: ``--endpoint-url`` (or botocore's own ``AWS_ENDPOINT_URL``), ``--profile``, ``--region``,
``--output {table,json}``. Exit codes: :class:`tierlift.errors.ExitCode` (docs/operations.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from tierlift.errors import ExitCode, OperatorError

if TYPE_CHECKING:
    from chalicelib.config import TenantConfig
    from chalicelib.names import Namespace
    from chalicelib.state import Promotion, StateStore

REPO_ROOT = Path(__file__).resolve().parents[1]
# An operator's command answers in seconds or says why: short connect timeout, few retries.
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3})


def _session(args: argparse.Namespace) -> boto3.session.Session:
    if args.endpoint_url:
        # botocore's own setting: the chalicelib adapters honour it without any special code path.
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.session.Session(profile_name=args.profile, region_name=args.region or None)


def _client(session: boto3.session.Session, service: str) -> Any:
    return session.client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]


def _store(session: boto3.session.Session) -> StateStore:
    from chalicelib.state import StateStore

    return StateStore(_client(session, "ssm"), _ssm_root())


def _print(args: argparse.Namespace, data: Any, table: str | None = None) -> None:
    if args.output == "json" or table is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(table)


def _ssm_root() -> str:
    return os.environ.get("TIERLIFT_SSM_ROOT", "/tierlift").rstrip("/") or "/tierlift"


# commands -----------------------------------------------------------------------------------------
def _source_checkout() -> None:
    """The local cloud runs the Chalice app (app.py) of a source checkout, which ``pip install .`` lacks."""
    if not (REPO_ROOT / "app.py").exists():
        raise OperatorError(
            ExitCode.USAGE,
            "the local cloud and the demo run from a source checkout (app.py next to tierlift/): "
            "run them in the repository, or install it with pip install -e .",
        )


def cmd_serve(args: argparse.Namespace) -> int:
    _source_checkout()
    from tierlift.local import LocalCloud
    from tierlift.local.faults import Faults
    from tierlift.local.quotas import Quotas

    faults_text = args.faults
    if faults_text and faults_text.startswith("@"):
        faults_text = Path(faults_text[1:]).read_text()
    log = Path(args.handler_log) if args.handler_log else None
    cloud = LocalCloud(
        port=args.port,
        host=args.host,
        speed=args.speed,
        region=args.region or "us-east-1",
        faults=Faults.parse(faults_text),
        schedules=not args.no_schedules,
        echo=True,
        handler_log=log,
        concurrency=args.concurrency,
        quotas=Quotas(args.db_instance_quota, args.snapshot_quota),
    )
    cloud.start()
    print(f"tierlift local cloud: {cloud.endpoint} (speed x{args.speed:g}); handlers: {', '.join(cloud.handlers)}")
    print(f"  export AWS_ENDPOINT_URL={cloud.endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
    print(cloud.timeline.header(), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    cloud.stop()
    print(f"stopped; {len(cloud.dead_letters)} dead-lettered invocation(s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _source_checkout()
    from tierlift.demo import run_demo

    return run_demo(speed=args.speed, timeout=args.timeout, quiet=args.quiet)


def _local(args: argparse.Namespace) -> None:
    """``local`` commands talk to the local cloud only: default to its address, never to AWS."""
    if not args.endpoint_url:
        args.endpoint_url = os.environ.get("AWS_ENDPOINT_URL") or "http://127.0.0.1:4566"


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from tierlift.history import ensure_ledger
    from tierlift.world import bootstrap_tenant

    _local(args)
    session = _session(args)
    config = bootstrap_tenant(
        session, args.tenant, automatic=tuple(args.automatic), approval=tuple(args.approval), ssm_root=_ssm_root()
    )
    ensure_ledger(session, args.ledger)
    approval = [env for env, t in config["targets"].items() if t.get("approval") == "required"]
    table = (
        f"bootstrapped stacks common-nonprod, common-prod, {args.tenant}-qa, {args.tenant}-prod "
        f"and tenant {args.tenant} at {args.endpoint_url}\n"
        f"  source DB {config['source']['db_instance']}; services "
        + ", ".join(f"{t['cluster']}/{t['service']}" for t in config["targets"].values())
        + f"; automatic: {', '.join(config['automatic']) or '-'}; approval: {', '.join(approval) or '-'}"
        + f"; ledger: {args.ledger}"
    )
    _print(args, config, table)
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from tierlift import dlq
    from tierlift.local.cloud import DLQ

    _local(args)
    sqs = _session(args).client("sqs")
    url = sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
    records: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1).get("Messages", [])
        if not messages:
            break
        records.extend(json.loads(m["Body"]) for m in messages)
        if len(messages) < 10:
            break
    # Lambda's on-failure destination records, as the packaged template's invocations dead-letter queue holds
    letters = [dlq.parse(url, {"Body": json.dumps(r), "ReceiptHandle": ""}) for r in records]
    table = "\n".join(f"{d.handler!s:<36} attempts={d.attempts}  {d.error[:100]}" for d in letters) or "(empty)"
    _print(args, records, table)
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from tierlift import dlq

    session = _session(args)
    report = dlq.redrive(
        session.client("sqs"),
        session.client("events"),
        session.client("lambda"),
        logs=session.client("logs"),
        bus=os.environ.get("TIERLIFT_EVENT_BUS", "default"),
        queue=args.queue,
        dry_run=args.dry_run,
        max_age=args.max_age,
        ledger=args.ledger,
    )
    _print(args, report, dlq.table(report))
    return 1 if any(r.get("failed") for r in report) else 0


def cmd_register(args: argparse.Namespace) -> int:
    from chalicelib.config import InvalidConfig, parse_config
    from chalicelib.names import InvalidName, Tenant

    try:
        raw = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        raise OperatorError(ExitCode.USAGE, f"cannot read {args.file}: {exc}") from None
    try:
        tenant = Tenant.parse(raw.get("tenant") if isinstance(raw, dict) else None)
        config = parse_config(tenant, raw)
    except (InvalidConfig, InvalidName) as exc:
        raise OperatorError(ExitCode.USAGE, f"invalid config: {exc}") from None
    store = _store(_session(args))
    store.put_config(config)
    name = store.config_path(tenant)
    _print(args, {"registered": name}, f"registered {name}")
    return 0


# the operator's commands ------------------------------------------------------------------------
def _requested_by(args: argparse.Namespace) -> str:
    return str(args.requested_by or os.environ.get("USER") or os.environ.get("LOGNAME") or "operator")


def _target(store: StateStore, tenant: str, environment: str | None) -> tuple[TenantConfig, Namespace | None]:
    """The tenant's config and the namespace of ``environment`` (a target environment), or why not."""
    from chalicelib.config import InvalidConfig
    from chalicelib.names import InvalidName, Tenant, parse_environment
    from chalicelib.state import UnknownTenant

    try:
        parsed = Tenant.parse(tenant)
        env = parse_environment(environment) if environment is not None else None
    except InvalidName as exc:
        raise OperatorError(ExitCode.USAGE, str(exc)) from None
    try:
        config = store.get_config(parsed)
    except UnknownTenant:
        raise OperatorError(
            ExitCode.NOT_FOUND, f"unknown tenant {tenant}: no config at {store.config_path(parsed)}"
        ) from None
    except InvalidConfig as exc:
        raise OperatorError(ExitCode.ERROR, f"tenant {tenant}'s config does not validate: {exc}") from None
    if env is None:
        return config, None
    if env not in config.targets:
        what = "the source environment, never a target" if env == config.source_environment else "not in its config"
        targets = ", ".join(config.targets)
        raise OperatorError(ExitCode.NOT_FOUND, f"environment {env} of {tenant} is {what} (targets: {targets})")
    return config, config.namespace(env)


def _put_event(session: boto3.session.Session, detail_type: str, detail: dict[str, Any]) -> str:
    """Put one ``tierlift`` event; returns its EventBridge id (a request's promotion id)."""
    from chalicelib.events import SOURCE

    response = _client(session, "events").put_events(
        Entries=[
            {
                "Source": SOURCE,
                "DetailType": detail_type,
                "Detail": json.dumps({k: v for k, v in detail.items() if v is not None}),
                "EventBusName": os.environ.get("TIERLIFT_EVENT_BUS", "default"),
            }
        ]
    )
    entry = response["Entries"][0]
    if response.get("FailedEntryCount") or "EventId" not in entry:
        raise OperatorError(
            ExitCode.ERROR, f"put-events refused {detail_type}: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}"
        )
    return str(entry["EventId"])


def _sent(args: argparse.Namespace, detail_type: str, event_id: str, ns: str, extra: str = "") -> None:
    text = f"{detail_type} for {ns}: {event_id}{extra}"
    if args.output == "json" and args.wait:
        print(text, file=sys.stderr)
    elif args.output == "json":
        print(json.dumps({"EventId": event_id, "DetailType": detail_type, "namespace": ns}, indent=2))
    else:
        print(text, flush=True)


def _follow(
    args: argparse.Namespace,
    session: boto3.session.Session,
    store: StateStore,
    ns: Namespace,
    promotion_id: str,
    started: datetime,
) -> int:
    from tierlift.follow import Follower, choose_source, summary

    out = sys.stderr if args.output == "json" else sys.stdout
    start = started - timedelta(minutes=5)  # clock skew between this machine and EventBridge
    source, note = choose_source(_client(session, "logs"), args.ledger, store, ns, promotion_id, start)
    if note:
        print(f"note: {note}", file=out)
    print(f"following {promotion_id} in {ns} (Ctrl-C stops following, not the promotion)", file=out, flush=True)
    follower = Follower(source, ns, promotion_id, started=started, timeout=args.timeout, poll=args.poll, out=out)
    result = follower.run()
    line = summary(result, ns, args.timeout)
    if args.output == "json":
        print(json.dumps({"promotion_id": promotion_id, "namespace": ns.name, **result.as_dict()}, indent=2))
        print(line, file=sys.stderr)
    else:
        print(line)
    return int(result.code)


def cmd_promote(args: argparse.Namespace) -> int:
    from chalicelib.names import InvalidName, Version

    if args.version:
        try:
            Version.parse(args.version)
        except InvalidName as exc:
            raise OperatorError(ExitCode.USAGE, str(exc)) from None
    session = _session(args)
    store = _store(session)
    _, ns = _target(store, args.tenant, args.environment)
    assert ns is not None
    return _request(args, session, store, ns, args.version, "")


def _request(
    args: argparse.Namespace,
    session: boto3.session.Session,
    store: StateStore,
    ns: Namespace,
    version: str | None,
    extra: str,
) -> int:
    from chalicelib.events import PROMOTION_REQUESTED

    detail = {
        "tenant": ns.tenant.name,
        "environment": ns.environment,
        "version": version,
        "image": args.image,
        "requested_by": _requested_by(args),
        "override": args.override,
    }
    started = datetime.now(UTC)
    promotion_id = _put_event(session, PROMOTION_REQUESTED, detail)
    _sent(args, PROMOTION_REQUESTED, promotion_id, ns.name, extra)
    if not args.wait:
        return 0
    return _follow(args, session, store, ns, promotion_id, started)


def cmd_approve(args: argparse.Namespace) -> int:
    from chalicelib.events import PROMOTION_APPROVED
    from chalicelib.state import Stage

    session = _session(args)
    store = _store(session)
    _, ns = _target(store, args.tenant, args.environment)
    assert ns is not None
    promotion = store.recorded(ns, with_queue=False).promotion
    if promotion is None or promotion.stage != Stage.AWAITING_APPROVAL:
        where = f"{promotion.id} is {promotion.stage}" if promotion is not None else "nothing is in flight"
        raise OperatorError(ExitCode.REFUSED, f"no promotion of {ns} is awaiting approval ({where})")
    if args.promotion_id and args.promotion_id != promotion.id:
        raise OperatorError(
            ExitCode.REFUSED,
            f"promotion {args.promotion_id} is not the one awaiting approval in {ns} ({promotion.id}, "
            f"version {promotion.version})",
        )
    detail = {
        "tenant": ns.tenant.name,
        "environment": ns.environment,
        "promotion_id": promotion.id,
        "command": "approve",
        "requested_by": _requested_by(args),
    }
    started = datetime.now(UTC)
    event_id = _put_event(session, PROMOTION_APPROVED, detail)
    _sent(args, PROMOTION_APPROVED, promotion.id, ns.name, f" (version {promotion.version}; event {event_id})")
    if not args.wait:
        return 0
    return _follow(args, session, store, ns, promotion.id, _started(promotion, started))


def _started(promotion: Promotion, default: datetime) -> datetime:
    """When the promotion started (its record's ``started``), to show times from its start."""
    try:
        when = datetime.fromisoformat(promotion.started.replace("Z", "+00:00"))
    except ValueError:
        return default
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_cancel(args: argparse.Namespace) -> int:
    from chalicelib.events import PROMOTION_CANCELLED

    session = _session(args)
    store = _store(session)
    _, ns = _target(store, args.tenant, args.environment)
    assert ns is not None
    recorded = store.recorded(ns)
    promotion = recorded.promotion
    queued = recorded.waiting
    wanted = args.promotion_id or (promotion.id if promotion is not None else None)
    if wanted is None and len(queued) == 1:
        wanted = queued[0].id
    if wanted is None:
        raise OperatorError(ExitCode.REFUSED, f"nothing to cancel in {ns}: no promotion in flight or queued")
    known = ([promotion.id] if promotion is not None else []) + [q.id for q in queued]
    if wanted not in known:
        raise OperatorError(
            ExitCode.REFUSED,
            f"promotion {wanted} is neither in flight nor queued in {ns} (known: {', '.join(known) or '-'})",
        )
    detail = {
        "tenant": ns.tenant.name,
        "environment": ns.environment,
        "promotion_id": wanted,
        "command": "cancel",
        "requested_by": _requested_by(args),
        "reason": args.reason,
    }
    started = datetime.now(UTC)
    event_id = _put_event(session, PROMOTION_CANCELLED, detail)
    _sent(args, "Cancel", wanted, ns.name, f" (event {event_id})")
    if not args.wait:
        return 0
    begun = _started(promotion, started) if promotion is not None and promotion.id == wanted else started
    return _follow(args, session, store, ns, wanted, begun)


def previous_version(history: list[str], active: str) -> str | None:
    """The version active before ``active``, from ``active``'s parameter history (oldest first)."""
    for value in reversed(history):
        if value != active:
            return value
    return None


def _active_history(session: boto3.session.Session, store: StateStore, ns: Namespace) -> list[str]:
    """``active``'s parameter history, oldest first (SSM keeps its last 100 versions)."""
    values: list[str] = []
    paginator = _client(session, "ssm").get_paginator("get_parameter_history")
    for page in paginator.paginate(Name=store.active_path(ns)):
        values.extend(str(p["Value"]) for p in page.get("Parameters", []))
    return values


def cmd_rollback(args: argparse.Namespace) -> int:
    from chalicelib.names import InvalidName, Version

    session = _session(args)
    store = _store(session)
    config, ns = _target(store, args.tenant, args.environment)
    assert ns is not None
    active = store.get_active(ns)
    if active is None:
        raise OperatorError(ExitCode.REFUSED, f"nothing is active in {ns}: there is nothing to roll back")
    if args.to:
        try:
            target = Version.parse(args.to)
        except InvalidName as exc:
            raise OperatorError(ExitCode.USAGE, str(exc)) from None
    else:
        found = previous_version(_active_history(session, store, ns), active.value)
        if found is None:
            raise OperatorError(
                ExitCode.REFUSED, f"{ns} has had no version before {active}: name one with --to VERSION"
            )
        target = Version.parse(found)
    if target == active:
        raise OperatorError(ExitCode.REFUSED, f"{target} is already active in {ns}")
    snapshot = config.source.snapshot_id(target)
    rds = _client(session, "rds")
    try:
        snapshots = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"]
    except rds.exceptions.DBSnapshotNotFoundFault:
        snapshots = []
    if not snapshots:
        raise OperatorError(
            ExitCode.REFUSED,
            f"cannot roll {ns} back to {target}: its source snapshot {snapshot} is gone (kept: the newest "
            f"TIERLIFT_SOURCE_SNAPSHOTS_KEPT); promote a newer version instead",
        )
    if snapshots[0].get("Status") != "available":
        raise OperatorError(
            ExitCode.REFUSED, f"cannot roll {ns} back to {target}: snapshot {snapshot} is {snapshots[0].get('Status')}"
        )
    return _request(args, session, store, ns, target.value, f" (roll back {active} -> {target})")


def cmd_snapshot(args: argparse.Namespace) -> int:
    from chalicelib.events import SNAPSHOT_REQUESTED

    session = _session(args)
    store = _store(session)
    config, _ = _target(store, args.tenant, None)
    started = datetime.now(UTC)
    before = _snapshot_ids(session, config) if args.wait else set()
    event_id = _put_event(session, SNAPSHOT_REQUESTED, {"tenant": args.tenant, "requested_by": _requested_by(args)})
    if not args.wait:
        _print(args, {"EventId": event_id, "DetailType": SNAPSHOT_REQUESTED}, f"{SNAPSHOT_REQUESTED}: {event_id}")
        return 0
    out = sys.stderr if args.output == "json" else sys.stdout
    print(f"{SNAPSHOT_REQUESTED}: {event_id}; waiting for the snapshot of {config.source_db_instance}", file=out)
    found = _wait_snapshot(session, config, started, before, args.timeout, args.poll)
    if found is None:
        print(f"timed out after {args.timeout:.0f}s waiting for the snapshot", file=sys.stderr)
        return int(ExitCode.TIMED_OUT)
    name, version = found
    _print(args, {"snapshot": name, "version": version}, f"snapshot {name} available: version {version}")
    return 0


def _manual_snapshots(session: boto3.session.Session, config: TenantConfig) -> list[dict[str, Any]]:
    rds = _client(session, "rds")
    pages = rds.get_paginator("describe_db_snapshots").paginate(
        DBInstanceIdentifier=config.source_db_instance, SnapshotType="manual"
    )
    return [snap for page in pages for snap in page.get("DBSnapshots", [])]


def _snapshot_ids(session: boto3.session.Session, config: TenantConfig) -> set[str]:
    return {snap["DBSnapshotIdentifier"] for snap in _manual_snapshots(session, config)}


def _wait_snapshot(
    session: boto3.session.Session,
    config: TenantConfig,
    since: datetime,
    before: set[str],
    timeout: float,
    poll: float,
) -> tuple[str, str] | None:
    """The first new manual snapshot of the source DB (absent in ``before``, named for a version at or
    after ``since``), once available."""
    from chalicelib.names import InvalidName, Versioned

    floor = (since - timedelta(seconds=2)).strftime("%Y%m%d%H%M%S")
    deadline = time.monotonic() + timeout
    while True:
        for snap in _manual_snapshots(session, config):
            if snap["DBSnapshotIdentifier"] in before:
                continue
            try:
                parsed = Versioned.parse_snapshot(snap["DBSnapshotIdentifier"])
            except InvalidName:
                continue
            fresh = parsed.namespace == config.source and parsed.version.value >= floor
            if fresh and snap.get("Status") == "available":
                return parsed.snapshot_id, parsed.version.value
        if time.monotonic() + poll > deadline:
            return None
        time.sleep(max(0.5, poll))


def cmd_status(args: argparse.Namespace) -> int:
    from tierlift.status import overview, render_overview, render_table, tenant_status, terminal_size

    session = _session(args)
    if args.tenant:
        store = _store(session)
        _target(store, args.tenant, None)
        tenant_rows = tenant_status(session, args.tenant, _ssm_root())
        _print(args, tenant_rows, render_table(tenant_rows))
        return 0
    now = datetime.now(UTC)
    height, width = terminal_size()
    wants_all = args.all or args.output == "json"
    rows = overview(session, _store(session), with_services=lambda r: wants_all or r.attention(now))
    data = [r.as_dict(now) for r in rows]
    _print(args, data, render_overview(rows, now, show_all=args.all, height=height, width=width))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from tierlift.history import LedgerMissing, fold, parse_since, read_ledger, render_history

    session = _session(args)
    store = _store(session)
    try:
        start = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise OperatorError(ExitCode.USAGE, str(exc)) from None
    from chalicelib.names import InvalidName, Tenant, parse_environment

    try:
        Tenant.parse(args.tenant)
        if args.environment:
            parse_environment(args.environment)
    except InvalidName as exc:
        raise OperatorError(ExitCode.USAGE, str(exc)) from None
    try:
        events = read_ledger(
            _client(session, "logs"), args.ledger, tenant=args.tenant, environment=args.environment, start=start
        )
    except LedgerMissing as exc:
        raise OperatorError(
            ExitCode.NOT_FOUND, f"{exc}: deploy the ledger rule, or name the group with --ledger"
        ) from None
    if not events:
        _target(store, args.tenant, args.environment)  # a wrong tenant or environment says so
    records = fold(events)
    _print(args, [r.as_dict() for r in records], render_history(records))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        from chalicelib.sweep import run_sweep  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("the sweep is not available yet: chalicelib/sweep.py (run_sweep) is missing", file=sys.stderr)
        return 2
    from chalicelib.deps import Deps

    deps = Deps.from_session(_session(args))
    result = run_sweep(deps, args.tenant, dry_run=args.dry_run)
    data = result.as_dict() if hasattr(result, "as_dict") else result
    _print(args, data, json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


# parser -------------------------------------------------------------------------------------------
def cmd_soak(args: argparse.Namespace) -> int:
    from tierlift.soak import run_soak

    return run_soak(
        args.tenants, args.promotions, args.faults, args.concurrency, args.seed, args.speed, args.output, args.settle
    )


def _common(top_level: bool) -> argparse.ArgumentParser:
    """The common flags; on subcommands they default to 'not given' so they never undo the top level's."""

    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoint-url", default=default(None), help="AWS endpoint (default: botocore's AWS_ENDPOINT_URL or AWS)"
    )
    common.add_argument("--profile", default=default(None), help="AWS profile")
    common.add_argument(
        "--region", default=default(os.environ.get("AWS_DEFAULT_REGION", "us-east-1")), help="AWS region"
    )
    common.add_argument("--output", choices=("table", "json"), default=default("table"))
    return common


def _follow_flags() -> argparse.ArgumentParser:
    """``--wait`` and how: for the commands that start or steer a promotion."""
    from tierlift.history import ledger_log_group

    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--wait", action="store_true", help="follow the promotion to its outcome (exit codes below)")
    flags.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)")
    flags.add_argument("--poll", type=float, default=2.0, help="seconds between two reads while waiting (min 0.5)")
    flags.add_argument(
        "--ledger", default=ledger_log_group(), help="the ledger's log group (TIERLIFT_LEDGER_LOG_GROUP)"
    )
    flags.add_argument("--requested-by", help="who asks (default: $USER)")
    return flags


EPILOG = """exit codes: 0 done/completed, 1 AWS error, 2 usage, 3 unknown tenant/environment/promotion,
4 refused (nothing to approve/cancel, snapshot gone), 5 no or rejected credentials, 6 endpoint
unreachable; --wait: 10 rejected, 11 failed, 12 rolled back, 13 cancelled, 14 timed out; 130 Ctrl-C.
See docs/operations.md."""


def parser() -> argparse.ArgumentParser:
    common = _common(top_level=False)
    follow = _follow_flags()
    top = argparse.ArgumentParser(
        prog="tierlift",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(top_level=True)],
    )
    sub = top.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the local cloud", parents=[common])
    local_sub = local.add_subparsers(dest="local_command", required=True)
    serve = local_sub.add_parser("serve", help="moto + event emulation + delivery, in one process", parents=[common])
    serve.add_argument("--port", type=int, default=4566)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    serve.add_argument("--speed", type=float, default=600.0, help="divide every AWS duration by this")
    serve.add_argument("--faults", help="fault injection JSON, or @FILE (see docs/local-cloud.md)")
    serve.add_argument("--no-schedules", action="store_true", help="never fire scheduled rules on their own")
    serve.add_argument("--concurrency", type=int, default=4, help="invocations in flight at once (1: one at a time)")
    serve.add_argument("--db-instance-quota", type=int, default=40, help="the account's RDS DBInstances quota")
    serve.add_argument("--snapshot-quota", type=int, default=100, help="the account's RDS ManualSnapshots quota")
    serve.add_argument(
        "--handler-log",
        default=str(Path(tempfile.gettempdir()) / "tierlift-local" / "handlers.log"),
        help="where the handlers' JSON logs go ('' for stdout)",
    )
    serve.set_defaults(func=cmd_serve)
    bootstrap = local_sub.add_parser(
        "bootstrap", help="create common-nonprod/prod and a tenant (dev DB, services, config)", parents=[common]
    )
    bootstrap.add_argument("--tenant", default="xy-0146")
    bootstrap.add_argument("--automatic", nargs="*", default=["qa"], help="environments promoted automatically")
    bootstrap.add_argument("--approval", nargs="*", default=[], help="environments whose promotions wait for approve")
    bootstrap.add_argument("--ledger", default=_follow_flags().get_default("ledger"), help="the ledger's log group")
    bootstrap.set_defaults(func=cmd_bootstrap)
    dlq = local_sub.add_parser("dlq", help="the dead-lettered handler invocations", parents=[common])
    dlq.set_defaults(func=cmd_dlq)

    demo = sub.add_parser("demo", help="the whole pipeline on the local cloud, invariants checked", parents=[common])
    demo.add_argument("--speed", type=float, default=600.0)
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds each step may take")
    demo.add_argument("--quiet", action="store_true", help="only the status table and the checks, no timeline")
    demo.set_defaults(func=cmd_demo)

    soak = sub.add_parser("soak", help="a seeded, fault-injected soak on the local cloud", parents=[common])
    soak.add_argument("--tenants", type=int, default=5)
    soak.add_argument("--promotions", type=int, default=50)
    soak.add_argument("--faults", default="all", help="all, none, or a comma list (see tierlift/soak.py)")
    soak.add_argument("--concurrency", type=int, default=4)
    soak.add_argument("--seed", type=int, default=1)
    soak.add_argument("--speed", type=float, default=1200.0)
    soak.add_argument("--settle", type=float, default=180.0, help="seconds allowed for the world to settle")
    soak.set_defaults(func=cmd_soak)

    tenant = sub.add_parser("tenant", help="tenant configs", parents=[common])
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True)
    register = tenant_sub.add_parser("register", help="validate and store a tenant config", parents=[common])
    register.add_argument("file")
    register.set_defaults(func=cmd_register)

    promote = sub.add_parser("promote", help="request a promotion (Promotion Requested)", parents=[common, follow])
    promote.add_argument("tenant")
    promote.add_argument("environment")
    promote.add_argument("--version", help="default: what the environment before holds")
    promote.add_argument("--image", help="the image to roll out with it (from the tenant's allowed_images)")
    promote.add_argument("--override", metavar="REASON", help="skip require_completed_before, recorded with why")
    promote.set_defaults(func=cmd_promote)

    approve = sub.add_parser("approve", help="approve the promotion awaiting approval", parents=[common, follow])
    approve.add_argument("tenant")
    approve.add_argument("environment")
    approve.add_argument("--promotion-id", help="default: the one awaiting approval")
    approve.set_defaults(func=cmd_approve)

    cancel = sub.add_parser("cancel", help="cancel a promotion in flight or queued", parents=[common, follow])
    cancel.add_argument("tenant")
    cancel.add_argument("environment")
    cancel.add_argument("--promotion-id", help="default: the one in flight (else the one queued)")
    cancel.add_argument("--reason")
    cancel.set_defaults(func=cmd_cancel)

    rollback = sub.add_parser("rollback", help="promote the previous active version again", parents=[common, follow])
    rollback.add_argument("tenant")
    rollback.add_argument("environment")
    rollback.add_argument("--to", metavar="VERSION", help="default: the version active before the current one")
    rollback.add_argument("--image", help="the image to roll out with it")
    rollback.add_argument("--override", metavar="REASON", help="skip require_completed_before, recorded with why")
    rollback.set_defaults(func=cmd_rollback)

    snapshot = sub.add_parser("snapshot", help="take a source snapshot (Snapshot Requested)", parents=[common, follow])
    snapshot.add_argument("tenant")
    snapshot.set_defaults(func=cmd_snapshot)

    status = sub.add_parser("status", help="what is active where: every tenant, or one", parents=[common])
    status.add_argument("tenant", nargs="?")
    status.add_argument("--all", action="store_true", help="every environment, idle ones too")
    status.set_defaults(func=cmd_status)

    history = sub.add_parser("history", help="every promotion in the ledger", parents=[common])
    history.add_argument("tenant")
    history.add_argument("environment", nargs="?")
    history.add_argument("--since", help="30m, 12h, 7d, an ISO date/time or YYYYMMDDHHMMSS (default: all kept)")
    history.add_argument("--ledger", default=_follow_flags().get_default("ledger"), help="the ledger's log group")
    history.set_defaults(func=cmd_history)

    sweep = sub.add_parser("sweep", help="run the sweep now (chalicelib.sweep.run_sweep)", parents=[common])
    sweep.add_argument("tenant", nargs="?")
    sweep.add_argument("--dry-run", action="store_true")
    sweep.set_defaults(func=cmd_sweep)

    dlq_top = sub.add_parser("dlq", help="the deployed pipeline's dead-letter queues", parents=[common])
    redrive = dlq_top.add_subparsers(dest="dlq_command", required=True).add_parser(
        "redrive", help="send dead-lettered events back (put-events, or re-invoke for AWS events)", parents=[common]
    )
    redrive.add_argument("--queue", help="one queue name (default: every tierlift-*-dlq queue)")
    redrive.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    redrive.add_argument(
        "--max-age",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="the pipeline's TIERLIFT_ENDED_RETENTION_SECONDS (default 86400): an older request is sent back "
        "only if the ledger shows it never ended; other old requests and commands stay in the queue",
    )
    redrive.add_argument(
        "--ledger", default=_follow_flags().get_default("ledger"), help="the ledger's log group (old requests)"
    )
    redrive.set_defaults(func=cmd_dlq_redrive)
    return top


AUTH_ERRORS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
}


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or "AWS"


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and an :class:`ExitCode`, never a traceback."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    args = parser().parse_args(argv)
    from botocore import exceptions as bx

    def fail(code: ExitCode, message: str) -> int:
        print(f"tierlift: {message}", file=sys.stderr)
        return int(code)

    try:
        return int(args.func(args))
    except OperatorError as exc:
        return fail(exc.code, exc.message)
    except KeyboardInterrupt:
        return fail(ExitCode.INTERRUPTED, "interrupted (a promotion already requested goes on)")
    except (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ProfileNotFound) as exc:
        return fail(ExitCode.NO_CREDENTIALS, f"{exc} (set AWS_PROFILE / --profile, or AWS_ACCESS_KEY_ID and co.)")
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError, bx.ReadTimeoutError) as exc:
        return fail(ExitCode.UNREACHABLE, f"cannot reach {_endpoint()}: {exc}")
    except bx.NoRegionError:
        return fail(ExitCode.USAGE, "no AWS region: set AWS_DEFAULT_REGION or --region")
    except bx.ClientError as exc:
        error = exc.response.get("Error", {})
        code = ExitCode.NO_CREDENTIALS if error.get("Code") in AUTH_ERRORS else ExitCode.ERROR
        return fail(code, f"{exc.operation_name} at {_endpoint()}: {error.get('Code')}: {error.get('Message')}")
    except bx.BotoCoreError as exc:
        return fail(ExitCode.ERROR, f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        if os.environ.get("TIERLIFT_DEBUG"):
            raise
        return fail(ExitCode.ERROR, f"unexpected {type(exc).__name__}: {exc} (TIERLIFT_DEBUG=1 shows the traceback)")
