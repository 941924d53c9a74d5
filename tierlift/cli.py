"""``python -m tierlift``: local cloud, demo, and the operator's commands against any endpoint.

Common flags: ``--endpoint-url`` (or botocore's own ``AWS_ENDPOINT_URL``), ``--profile``, ``--region``,
``--output {table,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import boto3

REPO_ROOT = Path(__file__).resolve().parents[1]


def _session(args: argparse.Namespace) -> boto3.session.Session:
    if args.endpoint_url:
        # botocore's own setting: the chalicelib adapters honour it without any special code path.
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.session.Session(profile_name=args.profile, region_name=args.region or None)


def _print(args: argparse.Namespace, data: Any, table: str | None = None) -> None:
    if args.output == "json" or table is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(table)


def _ssm_root() -> str:
    return os.environ.get("TIERLIFT_SSM_ROOT", "/tierlift").rstrip("/") or "/tierlift"


# commands -----------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from tierlift.local import LocalCloud
    from tierlift.local.faults import Faults

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
    from tierlift.demo import run_demo

    return run_demo(speed=args.speed, timeout=args.timeout, quiet=args.quiet)


def _local(args: argparse.Namespace) -> None:
    """``local`` commands talk to the local cloud only: default to its address, never to AWS."""
    if not args.endpoint_url:
        args.endpoint_url = os.environ.get("AWS_ENDPOINT_URL") or "http://127.0.0.1:4566"


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from tierlift.world import bootstrap_tenant

    _local(args)
    config = bootstrap_tenant(_session(args), args.tenant, automatic=tuple(args.automatic))
    table = (
        f"bootstrapped stacks common-nonprod, common-prod, {args.tenant}-qa, {args.tenant}-prod "
        f"and tenant {args.tenant} at {args.endpoint_url}\n"
        f"  source DB {config['source']['db_instance']}; services "
        + ", ".join(f"{t['cluster']}/{t['service']}" for t in config["targets"].values())
        + f"; automatic: {', '.join(config['automatic']) or '-'}"
    )
    _print(args, config, table)
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
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
    table = "\n".join(f"{r['handler']:<20} attempts={r['attempts']}  {r['error'][:100]}" for r in records) or "(empty)"
    _print(args, records, table)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from chalicelib.config import InvalidConfig, parse_config
    from chalicelib.names import InvalidName, Tenant

    raw = json.loads(Path(args.file).read_text())
    try:
        tenant = Tenant.parse(raw.get("tenant"))
        parse_config(tenant, raw)
    except (InvalidConfig, InvalidName) as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 2
    name = f"{_ssm_root()}/{tenant.name}/config"
    _session(args).client("ssm").put_parameter(Name=name, Value=json.dumps(raw), Type="String", Overwrite=True)
    _print(args, {"registered": name}, f"registered {name}")
    return 0


def _put(args: argparse.Namespace, detail_type: str, detail: dict[str, Any]) -> int:
    response = (
        _session(args)
        .client("events")
        .put_events(
            Entries=[
                {
                    "Source": "tierlift",
                    "DetailType": detail_type,
                    "Detail": json.dumps({k: v for k, v in detail.items() if v is not None}),
                    "EventBusName": os.environ.get("TIERLIFT_EVENT_BUS", "default"),
                }
            ]
        )
    )
    entry = response["Entries"][0]
    if response.get("FailedEntryCount"):
        print(f"put-events failed: {entry}", file=sys.stderr)
        return 1
    _print(args, {"EventId": entry["EventId"], "DetailType": detail_type}, f"{detail_type}: {entry['EventId']}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from chalicelib.names import InvalidName, Tenant, Version, parse_environment

    try:
        Tenant.parse(args.tenant)
        parse_environment(args.environment)
        if args.version:
            Version.parse(args.version)
    except InvalidName as exc:
        print(str(exc), file=sys.stderr)
        return 2
    detail = {
        "tenant": args.tenant,
        "environment": args.environment,
        "version": args.version,
        "image": args.image,
        "requested_by": args.requested_by,
    }
    return _put(args, "Promotion Requested", detail)


def cmd_snapshot(args: argparse.Namespace) -> int:
    return _put(args, "Snapshot Requested", {"tenant": args.tenant, "requested_by": args.requested_by})


def cmd_status(args: argparse.Namespace) -> int:
    from tierlift.status import render_table, tenant_status

    try:
        rows = tenant_status(_session(args), args.tenant, _ssm_root())
    except LookupError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    _print(args, rows, render_table(rows))
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


def parser() -> argparse.ArgumentParser:
    common = _common(top_level=False)
    top = argparse.ArgumentParser(prog="python -m tierlift", description=__doc__, parents=[_common(top_level=True)])
    sub = top.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the local cloud", parents=[common])
    local_sub = local.add_subparsers(dest="local_command", required=True)
    serve = local_sub.add_parser("serve", help="moto + event emulation + delivery, in one process", parents=[common])
    serve.add_argument("--port", type=int, default=4566)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    serve.add_argument("--speed", type=float, default=600.0, help="divide every AWS duration by this")
    serve.add_argument("--faults", help="fault injection JSON, or @FILE (see docs/local-cloud.md)")
    serve.add_argument("--no-schedules", action="store_true", help="never fire scheduled rules on their own")
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
    bootstrap.set_defaults(func=cmd_bootstrap)
    dlq = local_sub.add_parser("dlq", help="the dead-lettered handler invocations", parents=[common])
    dlq.set_defaults(func=cmd_dlq)

    demo = sub.add_parser("demo", help="the whole pipeline on the local cloud, invariants checked", parents=[common])
    demo.add_argument("--speed", type=float, default=600.0)
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds each step may take")
    demo.add_argument("--quiet", action="store_true", help="only the status table and the checks, no timeline")
    demo.set_defaults(func=cmd_demo)

    tenant = sub.add_parser("tenant", help="tenant configs", parents=[common])
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True)
    register = tenant_sub.add_parser("register", help="validate and store a tenant config", parents=[common])
    register.add_argument("file")
    register.set_defaults(func=cmd_register)

    promote = sub.add_parser("promote", help="put a Promotion Requested event", parents=[common])
    promote.add_argument("tenant")
    promote.add_argument("environment")
    promote.add_argument("--version")
    promote.add_argument("--image")
    promote.add_argument("--requested-by", default=os.environ.get("USER", "operator"))
    promote.set_defaults(func=cmd_promote)

    snapshot = sub.add_parser("snapshot", help="put a Snapshot Requested event", parents=[common])
    snapshot.add_argument("tenant")
    snapshot.add_argument("--requested-by", default=os.environ.get("USER", "operator"))
    snapshot.set_defaults(func=cmd_snapshot)

    status = sub.add_parser("status", help="a tenant's environments", parents=[common])
    status.add_argument("tenant")
    status.set_defaults(func=cmd_status)

    sweep = sub.add_parser("sweep", help="run the sweep now (chalicelib.sweep.run_sweep)", parents=[common])
    sweep.add_argument("tenant", nargs="?")
    sweep.add_argument("--dry-run", action="store_true")
    sweep.set_defaults(func=cmd_sweep)
    return top


def main(argv: list[str] | None = None) -> int:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    args = parser().parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return int(args.func(args))
    except (BotoCoreError, ClientError) as exc:
        print(f"tierlift: {exc}", file=sys.stderr)
        return 1
