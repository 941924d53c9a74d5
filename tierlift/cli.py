"""``tierlift`` (or ``python -m tierlift``): the operator's commands against any endpoint, the local
cloud and the demo.

Common flags: ``--endpoint-url`` (or botocore's own ``AWS_ENDPOINT_URL``), ``--profile``, ``--region``,
``--output {table,json}``. Exit codes: :class:`tierlift.errors.ExitCode` (docs/operations.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from tierlift.errors import ExitCode, OperatorError

if TYPE_CHECKING:
    from chalicelib.adapters.state import StateStore
    from chalicelib.domain.config import TenantConfig
    from chalicelib.domain.model import EnvRecord, Promotion
    from chalicelib.domain.names import Namespace, Version

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
    from chalicelib.adapters.ssm import SsmStateStore

    return SsmStateStore(_client(session, "ssm"), _ssm_root())


def _print(args: argparse.Namespace, data: Any, table: str | None = None) -> None:
    """``--output json``: ``data`` (snake_case keys, nulls, ISO-8601 UTC times); else the table."""
    from tierlift.output import json_text

    if args.output == "json" or table is None:
        print(json_text(data))
    else:
        print(table)


def _ssm_root() -> str:
    return os.environ.get("TIERLIFT_SSM_ROOT", "/tierlift").rstrip("/") or "/tierlift"


def _event_bus() -> str:
    """tierlift's bus, the one place the CLI resolves it: ``--event-bus-name`` (which sets
    ``TIERLIFT_EVENT_BUS``), else ``TIERLIFT_EVENT_BUS``, else ``tierlift-dev``; never the default bus."""
    from tierlift.buses import own_bus

    try:
        return own_bus()
    except ValueError as exc:
        raise OperatorError(ExitCode.USAGE, str(exc)) from None


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
    from tierlift.local.cloud import local_ledger
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
    cloud.timeline.verbose = args.verbose
    cloud.timeline.as_json = args.output == "json"
    cloud.start()
    out = sys.stderr if args.output == "json" else sys.stdout  # --output json: stdout is JSON lines only
    import textwrap

    print(
        f"tierlift local cloud: {cloud.endpoint} (speed x{args.speed:g}); state in memory, gone when it stops", file=out
    )
    print(textwrap.fill("handlers: " + ", ".join(cloud.handlers), 120, subsequent_indent="  "), file=out)
    port = "" if args.port == 4566 else f" --port {args.port}"
    print(f'in another shell (or: eval "$(tierlift local env{port})"):', file=out)
    print(export_line(cloud.endpoint, cloud.region, cloud.bus, local_ledger()), file=out)
    if args.output != "json":
        print(cloud.timeline.header(), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    cloud.stop()
    print(f"stopped; {len(cloud.dead_letters)} dead-lettered invocation(s)")
    return 0


def export_line(endpoint: str, region: str, bus: str, ledger: str | None = None) -> str:
    """The shell line that points the AWS CLI, boto3 and tierlift (its bus, its ledger) at the local
    cloud; ``eval``-able."""
    import shlex

    values = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "TIERLIFT_EVENT_BUS": bus,
    }
    if ledger:
        values["TIERLIFT_LEDGER_LOG_GROUP"] = ledger
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in values.items())


def cmd_env(args: argparse.Namespace) -> int:
    """``tierlift local env``: the export line for a local cloud (``eval "$(tierlift local env)"``)."""
    from tierlift.buses import own_bus
    from tierlift.local.cloud import local_ledger

    endpoint = args.endpoint_url or f"http://127.0.0.1:{args.port}"
    line = export_line(endpoint, args.region or "us-east-1", own_bus(), local_ledger())
    _print(args, {"endpoint_url": endpoint, "region": args.region or "us-east-1", "export": line}, line)
    return 0


def cmd_person(args: argparse.Namespace) -> int:
    """``tierlift local person NAME``: credentials of NAME's session in a role of the local cloud, as an
    identity provider hands them out (``eval "$(tierlift local person carol)"``): a second person for the
    two-person rule. tierlift's signed API sees ``arn:aws:sts::<account>:assumed-role/<role>/NAME``."""
    from tierlift.local.gateway import person

    session = _session(args)
    frozen = person(session, args.name, args.role).get_credentials()
    assert frozen is not None
    creds = frozen.get_frozen_credentials()
    line = (
        f"export AWS_ACCESS_KEY_ID={creds.access_key} AWS_SECRET_ACCESS_KEY={creds.secret_key} "
        f"AWS_SESSION_TOKEN={creds.token}"
    )
    principal = f"assumed-role/{args.role}/{args.name}"
    _print(args, {"principal": principal, "export": line}, line)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _source_checkout()
    from tierlift.demo import run_demo

    if args.output != "json":
        return run_demo(speed=args.speed, timeout=args.timeout, quiet=args.quiet)
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the story and its checks go to stderr, the verdict to stdout
        code = run_demo(speed=args.speed, timeout=args.timeout, quiet=args.quiet)
    _print(args, {"passed": code == 0, "exit_code": code})
    return code


def _local(args: argparse.Namespace) -> None:
    """``local`` commands talk to the local cloud only: default to its address, never to AWS."""
    if not args.endpoint_url:
        args.endpoint_url = os.environ.get("AWS_ENDPOINT_URL") or "http://127.0.0.1:4566"


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from tierlift.buses import own_bus
    from tierlift.history import ensure_ledger
    from tierlift.local.cloud import CELL_EXTERNAL_ID
    from tierlift.world import account_credentials, bootstrap_tenant

    _local(args)
    session = _session(args)
    automatic = () if args.no_automatic else tuple(args.automatic)
    cell = None
    if args.cell:
        # the tenant's resources in the cell's account (moto keeps each account's state), its config central
        cell = boto3.session.Session(region_name=session.region_name, **account_credentials(session, args.cell))
    config = bootstrap_tenant(
        session,
        args.tenant,
        automatic=automatic,
        approval=tuple(args.approval),
        ssm_root=_ssm_root(),
        cell=cell,
        cell_external_id=args.cell_external_id or CELL_EXTERNAL_ID,
        stage=own_bus().removeprefix("tierlift-"),
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
        + (f"\n  in cell {config['cell']['account']}, through {config['cell']['role_arn']}" if args.cell else "")
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
    data = [
        {
            "handler": d.handler,
            "attempts": d.attempts,
            "error": d.error,
            "kind": d.kind,
            "event_id": (d.event or {}).get("id"),
            "detail_type": (d.event or {}).get("detail-type"),
            "event": d.event,
        }
        for d in letters
    ]
    _print(args, data, table)
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from tierlift import dlq

    session = _session(args)
    report = dlq.redrive(
        session.client("sqs"),
        session.client("events"),
        session.client("lambda"),
        logs=session.client("logs"),
        bus=_event_bus(),
        queue=args.queue,
        dry_run=args.dry_run,
        max_age=args.max_age,
        ledger=args.ledger,
    )
    _print(args, report, dlq.table(report))
    return 1 if any(r.get("failed") for r in report) else 0


def cmd_register(args: argparse.Namespace) -> int:
    from chalicelib.domain.config import InvalidConfig, parse_config
    from chalicelib.domain.names import InvalidName, Tenant

    try:
        raw = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        raise OperatorError(ExitCode.USAGE, f"cannot read {args.file}: {exc}") from None
    try:
        tenant = Tenant.parse(raw.get("tenant") if isinstance(raw, dict) else None)
        config = parse_config(tenant, raw)
    except (InvalidConfig, InvalidName) as exc:
        raise OperatorError(ExitCode.USAGE, f"invalid config: {exc}") from None
    session = _session(args)
    store = _store(session)
    name = store.layout.config(tenant)
    if not args.no_check:
        from tierlift.preflight import CheckFailed, missing, refusal

        try:
            found = missing(session, config, client=lambda service: _client(session, service))
        except CheckFailed as exc:
            raise OperatorError(
                ExitCode.ERROR, f"{exc}: allow the Describe calls, or register with --no-check"
            ) from None
        if found:
            raise OperatorError(ExitCode.REFUSED, refusal(config, found))
    store.put_config(config)
    note = " without checking what it names (tierlift status " + tenant.name + " shows what is missing)"
    _print(
        args,
        {"registered": name, "tenant": tenant.name, "checked": not args.no_check},
        f"registered {name}" + (note if args.no_check else ""),
    )
    return 0


# the operator's commands ------------------------------------------------------------------------
def _requested_by(args: argparse.Namespace) -> str:
    return str(args.requested_by or os.environ.get("USER") or os.environ.get("LOGNAME") or "operator")


def _target(store: StateStore, tenant: str, environment: str | None) -> tuple[TenantConfig, Namespace | None]:
    """The tenant's config and the namespace of ``environment`` (a target environment), or why not."""
    from chalicelib.domain.config import InvalidConfig
    from chalicelib.domain.model import UnknownTenant
    from chalicelib.domain.names import InvalidName, Tenant, parse_environment

    try:
        parsed = Tenant.parse(tenant)
        env = parse_environment(environment) if environment is not None else None
    except InvalidName as exc:
        raise OperatorError(ExitCode.USAGE, str(exc)) from None
    try:
        config = store.get_config(parsed)
    except UnknownTenant:
        raise OperatorError(
            ExitCode.NOT_FOUND,
            f"unknown tenant {tenant}: no config at {store.layout.config(parsed)}; register it with "
            "tierlift tenant register FILE (tierlift status lists the tenants)",
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
    from chalicelib.domain.events import SOURCE

    response = _client(session, "events").put_events(
        Entries=[
            {
                "Source": SOURCE,
                "DetailType": detail_type,
                "Detail": json.dumps({k: v for k, v in detail.items() if v is not None}),
                "EventBusName": _event_bus(),
            }
        ]
    )
    entry = response["Entries"][0]
    if response.get("FailedEntryCount") or "EventId" not in entry:
        raise OperatorError(
            ExitCode.ERROR, f"put-events refused {detail_type}: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}"
        )
    return str(entry["EventId"])


def _signed(session: boto3.session.Session, route: str, detail: dict[str, Any]) -> dict[str, Any]:
    """One call of tierlift's signed API (SigV4 with the operator's credentials): the pipeline's answer.

    The caller is who the credentials are (API Gateway's IAM authorization, never a field of the body).
    A refusal (403, with the pipeline's reason) exits ``REFUSED``."""
    from tierlift import api

    body = {k: v for k, v in detail.items() if v is not None and k not in ("command", "requested_by")}
    try:
        status, answer = api.call(session, route, body)
    except api.ApiMissing as exc:
        raise OperatorError(ExitCode.USAGE, str(exc)) from None
    except OSError as exc:
        raise OperatorError(ExitCode.UNREACHABLE, f"tierlift's API cannot be reached: {exc}") from None
    answer = answer if isinstance(answer, dict) else {}
    reason = answer.get("reason") or answer.get("message") or answer.get("error") or ""
    if status == 403:
        raise OperatorError(ExitCode.REFUSED, f"refused: {reason}")
    if status != 200:
        raise OperatorError(ExitCode.ERROR, f"tierlift's API answered {status}: {reason}")
    return answer


def _signs(config: TenantConfig, environment: str, override: str | None) -> bool:
    """A request that must be signed: an override, or one into an environment with the two-person rule."""
    return override is not None or config.target(environment).policy.two_person


def _sent(
    args: argparse.Namespace,
    detail_type: str,
    event_id: str,
    ns: Namespace,
    promotion_id: str,
    extra: str = "",
    label: str | None = None,
) -> None:
    """What was put: one line (stderr with ``--output json --wait``: stdout is the outcome's JSON)."""
    text = f"{label or detail_type} for {ns}: {promotion_id}{extra}"
    if args.output == "json" and args.wait:
        print(text, file=sys.stderr)
    elif args.output == "json":
        data = {
            "event_id": event_id,
            "detail_type": detail_type,
            "promotion_id": promotion_id,
            "namespace": ns.name,
            "tenant": ns.tenant.name,
            "environment": ns.environment,
        }
        _print(args, data)
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
        _print(args, {"promotion_id": promotion_id, "namespace": ns.name, **result.as_dict()})
        print(line, file=sys.stderr)
    else:
        print(line)
    return int(result.code)


PROMOTION_ID = r"[A-Za-z0-9][A-Za-z0-9-]{0,127}"


def cmd_promote(args: argparse.Namespace) -> int:
    import re

    from chalicelib.domain.names import InvalidName, Version

    if args.version:
        try:
            Version.parse(args.version)
        except InvalidName as exc:
            raise OperatorError(ExitCode.USAGE, f"--version: {exc}") from None
    if args.promotion_id is not None and not re.fullmatch(PROMOTION_ID, args.promotion_id):
        raise OperatorError(
            ExitCode.USAGE, f"--promotion-id {args.promotion_id!r}: give 1-128 letters, digits and '-' (a CI run id)"
        )
    session = _session(args)
    store = _store(session)
    config, ns = _target(store, args.tenant, args.environment)
    assert ns is not None
    return _request(args, session, store, ns, args.version, "", signed=_signs(config, ns.environment, args.override))


def _request(
    args: argparse.Namespace,
    session: boto3.session.Session,
    store: StateStore,
    ns: Namespace,
    version: str | None,
    extra: str,
    *,
    signed: bool = False,
) -> int:
    from chalicelib.domain.events import PROMOTION_REQUESTED

    started = datetime.now(UTC)
    detail = {
        "tenant": ns.tenant.name,
        "environment": ns.environment,
        "version": version,
        "image": args.image,
        "requested_by": _requested_by(args),
        "override": args.override,
        "promotion_id": getattr(args, "promotion_id", None),
        # orders requests sent within the same second (the event's time has whole seconds)
        "requested_at": started.isoformat(timespec="microseconds"),
    }
    if signed:  # through tierlift's API: the request is the caller's, as AWS established it
        detail["promotion_id"] = detail["promotion_id"] or str(uuid.uuid4())
        answer = _signed(session, "promotions", detail)
        event_id = str(answer.get("promotion_id") or detail["promotion_id"])
    else:
        event_id = _put_event(session, PROMOTION_REQUESTED, detail)
    promotion_id = detail["promotion_id"] or event_id  # the id the pipeline answers the request by
    _sent(args, PROMOTION_REQUESTED, event_id, ns, promotion_id, extra)
    if not args.wait:
        return 0
    return _follow(args, session, store, ns, promotion_id, started)


def cmd_approve(args: argparse.Namespace) -> int:
    from chalicelib.domain.events import PROMOTION_APPROVED
    from chalicelib.domain.model import Stage

    session = _session(args)
    store = _store(session)
    config, ns = _target(store, args.tenant, args.environment)
    assert ns is not None
    if not config.targets[ns.environment].approval_required:
        raise OperatorError(
            ExitCode.REFUSED,
            f"{ns.environment} of {ns.tenant} does not require approval: its promotions cut over by themselves "
            f"(tierlift status {ns.tenant})",
        )
    started = datetime.now(UTC)
    promotion = store.read(ns).promotion
    before_gate = (Stage.REQUESTED, Stage.RESTORING)
    if promotion is None:
        raise OperatorError(
            ExitCode.REFUSED,
            f"nothing is in flight in {ns}: nothing to approve (tierlift history {ns.tenant} {ns.environment} "
            "shows how the last promotion ended)",
        )
    if args.promotion_id and args.promotion_id != promotion.id:
        raise OperatorError(
            ExitCode.REFUSED,
            f"promotion {args.promotion_id} is not the one in flight in {ns} ({promotion.id}, "
            f"version {promotion.version}, {promotion.stage}): approve that one with --promotion-id {promotion.id}",
        )
    if promotion.stage in before_gate and args.wait:
        promotion = _wait_for_gate(args, store, ns, promotion)
        if promotion is None:
            return _follow(args, session, store, ns, args.promotion_id or "", started)
    elif promotion.stage != Stage.AWAITING_APPROVAL:
        later = (
            "; tierlift approve --wait approves it once it reaches the gate" if promotion.stage in before_gate else ""
        )
        raise OperatorError(
            ExitCode.REFUSED,
            f"promotion {promotion.id} of {ns} is {promotion.stage}, not awaiting approval{later}",
        )
    detail = {
        "tenant": ns.tenant.name,
        "environment": ns.environment,
        "promotion_id": promotion.id,
        "command": "approve",
        "requested_by": _requested_by(args),
    }
    answer = _signed(session, "approvals", detail)  # an approval is always signed: the approver is who calls
    event_id = str(answer.get("promotion_id") or promotion.id)
    _sent(
        args,
        PROMOTION_APPROVED,
        event_id,
        ns,
        promotion.id,
        f" (version {promotion.version}; signed as {answer.get('principal')})",
    )
    if not args.wait:
        return 0
    return _follow(args, session, store, ns, promotion.id, _started(promotion, started))


def _wait_for_gate(args: argparse.Namespace, store: StateStore, ns: Namespace, promotion: Promotion) -> Any:
    """``approve --wait`` of a promotion still restoring: wait (reading the state every ``--poll``) until
    it awaits approval; None when it ended before (``args.promotion_id`` is then set to follow its end)."""
    from chalicelib.domain.model import Stage

    out = sys.stderr if args.output == "json" else sys.stdout
    print(f"waiting for {promotion.id} in {ns} to reach the approval gate ({promotion.stage})", file=out, flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(max(0.5, args.poll))
        now = store.read(ns).promotion
        if now is None or now.id != promotion.id:
            args.promotion_id = promotion.id
            return None
        if now.stage == Stage.AWAITING_APPROVAL:
            return now
        if now.stage not in (Stage.REQUESTED, Stage.RESTORING):
            raise OperatorError(ExitCode.REFUSED, f"promotion {promotion.id} of {ns} is {now.stage}, past the gate")
    raise OperatorError(
        ExitCode.TIMED_OUT, f"timed out after {args.timeout:.0f}s: {promotion.id} has not reached the approval gate"
    )


def _started(promotion: Promotion, default: datetime) -> datetime:
    """When the promotion started (its record's ``started``), to show times from its start."""
    try:
        when = datetime.fromisoformat(promotion.started.replace("Z", "+00:00"))
    except ValueError:
        return default
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_cancel(args: argparse.Namespace) -> int:
    from chalicelib.domain.events import PROMOTION_CANCELLED

    session = _session(args)
    store = _store(session)
    _, ns = _target(store, args.tenant, args.environment)
    assert ns is not None
    recorded = store.read(ns)
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
    answer = _signed(session, "cancellations", detail)
    event_id = str(answer.get("promotion_id") or wanted)
    _sent(args, PROMOTION_CANCELLED, event_id, ns, wanted, f" (signed as {answer.get('principal')})", label="Cancel")
    if not args.wait:
        return 0
    begun = _started(promotion, started) if promotion is not None and promotion.id == wanted else started
    return _follow(args, session, store, ns, wanted, begun)


def rollback_target(record: EnvRecord, to: str | None) -> Version:
    """The version a rollback of ``record``'s environment promotes: ``to``, else the version active
    before the active one (``EnvRecord.previous_active``, from the state record's completed versions)."""
    from chalicelib.domain.names import InvalidName, Version

    ns, active = record.namespace, record.active
    if active is None:
        raise OperatorError(
            ExitCode.REFUSED,
            f"nothing is active in {ns}: there is nothing to roll back; "
            f"promote a version with tierlift promote {ns.tenant} {ns.environment} --version VERSION",
        )
    if to:
        try:
            target = Version.parse(to)
        except InvalidName as exc:
            raise OperatorError(ExitCode.USAGE, f"--to: {exc}") from None
    else:
        found = record.previous_active
        if found is None:
            raise OperatorError(
                ExitCode.REFUSED, f"{ns} has had no version before {active}: name one with --to VERSION"
            )
        target = found
    if target == active:
        raise OperatorError(
            ExitCode.REFUSED,
            f"{target} is already active in {ns}: nothing to roll back to; name another version with --to VERSION",
        )
    return target


def cmd_rollback(args: argparse.Namespace) -> int:
    session = _session(args)
    store = _store(session)
    config, ns = _target(store, args.tenant, args.environment)
    assert ns is not None
    record = store.read(ns)
    target = rollback_target(record, args.to)
    active = record.active
    snapshot = config.source.snapshot_id(target)
    rds = _client(session, "rds")
    try:
        snapshots = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"]
    except rds.exceptions.DBSnapshotNotFoundFault:
        snapshots = []
    if not snapshots:
        raise OperatorError(ExitCode.REFUSED, snapshot_gone(record, target, snapshot))
    if snapshots[0].get("Status") != "available":
        raise OperatorError(
            ExitCode.REFUSED,
            f"cannot roll {ns} back to {target}: snapshot {snapshot} is {snapshots[0].get('Status')}; "
            "try again once it is available",
        )
    signed = _signs(config, ns.environment, getattr(args, "override", None))
    return _request(args, session, store, ns, target.value, f" (roll back {active} -> {target})", signed=signed)


def snapshot_gone(record: EnvRecord, target: Version, snapshot: str) -> str:
    """Why a rollback to ``target`` cannot be done when its source snapshot is not there, and what to do."""
    ns = record.namespace
    instead = f"promote a version that exists: tierlift promote {ns.tenant} {ns.environment} --version VERSION"
    if target.value in record.completed:
        return (
            f"cannot roll {ns} back to {target}: its source snapshot {snapshot} is gone (the pipeline keeps the "
            f"newest TIERLIFT_SOURCE_SNAPSHOTS_KEPT); {instead}"
        )
    ran = ", ".join(record.completed[-5:]) or "none"
    return (
        f"cannot roll {ns} back to {target}: {target} never ran in {ns} (recent versions: {ran}) and there is "
        f"no source snapshot {snapshot}; {instead}"
    )


def cmd_snapshot(args: argparse.Namespace) -> int:
    from chalicelib.domain.events import SNAPSHOT_REQUESTED
    from tierlift.history import duration

    session = _session(args)
    store = _store(session)
    config, _ = _target(store, args.tenant, None)
    started = datetime.now(UTC)
    before = _snapshot_ids(session, config) if args.wait else set()
    event_id = _put_event(session, SNAPSHOT_REQUESTED, {"tenant": args.tenant, "requested_by": _requested_by(args)})
    sent = {"event_id": event_id, "detail_type": SNAPSHOT_REQUESTED, "tenant": args.tenant}
    if not args.wait:
        _print(args, sent, f"{SNAPSHOT_REQUESTED} for {args.tenant}: {event_id}")
        return 0
    out = sys.stderr if args.output == "json" else sys.stdout
    print(
        f"{SNAPSHOT_REQUESTED} for {args.tenant}: {event_id}; waiting for the snapshot of {config.source_db_instance}",
        file=out,
        flush=True,
    )
    failure = _snapshot_failure(session, args.ledger, args.tenant, event_id, started, out)
    found = _wait_snapshot(session, config, started, before, args.timeout, args.poll, failure)
    if found is None:
        _print(
            args,
            {**sent, "outcome": "timed_out", "snapshot": None, "version": None, "reason": None},
            f"timed out after {duration(args.timeout)} waiting for the snapshot; it may still come: "
            f"tierlift status {args.tenant}",
        )
        return int(ExitCode.TIMED_OUT)
    if isinstance(found, dict):
        reason = str(found.get("reason") or "no reason given")
        _print(
            args,
            {**sent, "outcome": "failed", "snapshot": found.get("snapshot"), "version": None, "reason": reason},
            f"Snapshot Failed: {reason}",
        )
        return int(ExitCode.FAILED)
    name, version = found
    _print(
        args,
        {**sent, "outcome": "available", "snapshot": name, "version": version, "reason": None},
        f"snapshot {name} available: version {version}",
    )
    return 0


def _snapshot_failure(
    session: boto3.session.Session, ledger: str, tenant: str, event_id: str, started: datetime, out: Any
) -> Any:
    """A check for the pipeline's ``Snapshot Failed`` answer to request ``event_id`` in the ledger: its
    detail, or None. Where the ledger is not deployed, only the snapshot itself can be waited for."""
    from chalicelib.domain.events import SNAPSHOT_FAILED
    from tierlift.history import LedgerMissing, read_ledger

    logs = _client(session, "logs")
    start = started - timedelta(minutes=5)  # clock skew between this machine and EventBridge
    state = {"ledger": True}

    def check() -> dict[str, Any] | None:
        if not state["ledger"]:
            return None
        try:
            events = read_ledger(logs, ledger, tenant=tenant, start=start)
        except LedgerMissing as exc:
            state["ledger"] = False
            print(f"note: {exc}: a Snapshot Failed answer cannot be seen; waiting for the snapshot only", file=out)
            return None
        for event in events:
            if event.detail_type == SNAPSHOT_FAILED and event.detail.get("request_id") == event_id:
                return dict(event.detail)
        return None

    return check


def _manual_snapshots(session: boto3.session.Session, config: TenantConfig) -> list[dict[str, Any]]:
    from botocore.exceptions import ClientError

    rds = _client(session, "rds")
    pages = rds.get_paginator("describe_db_snapshots").paginate(
        DBInstanceIdentifier=config.source_db_instance, SnapshotType="manual"
    )
    try:
        return [snap for page in pages for snap in page.get("DBSnapshots", [])]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
            return []  # the source DB is not there: the pipeline answers with Snapshot Failed
        raise


def _snapshot_ids(session: boto3.session.Session, config: TenantConfig) -> set[str]:
    return {snap["DBSnapshotIdentifier"] for snap in _manual_snapshots(session, config)}


def _wait_snapshot(
    session: boto3.session.Session,
    config: TenantConfig,
    since: datetime,
    before: set[str],
    timeout: float,
    poll: float,
    failure: Any = None,
) -> tuple[str, str] | dict[str, Any] | None:
    """The first new manual snapshot of the source DB (absent in ``before``, named for a version at or
    after ``since``), once available; or the ``Snapshot Failed`` detail ``failure()`` finds; None: timed out."""
    from chalicelib.domain.names import InvalidName, Versioned

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
        failed = failure() if failure is not None else None
        if failed is not None:
            return dict(failed)
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
    from tierlift.history import LedgerMissing, fold, live_requests, parse_since, read_ledger, render_history

    session = _session(args)
    store = _store(session)
    try:
        start = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise OperatorError(ExitCode.USAGE, str(exc)) from None
    from chalicelib.domain.names import InvalidName, Tenant, parse_environment

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
    # A request without an outcome is in flight only while it holds a lock or a queue entry.
    tenant = store.read_tenant(Tenant.parse(args.tenant))
    envs = [r for env, r in tenant.envs.items() if args.environment in (None, env)]
    records = fold(events, live_requests(envs))
    _print(args, [r.as_dict() for r in records], render_history(records))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from tierlift import doctor

    return doctor.command(args, _session(args))


def cmd_sweep(args: argparse.Namespace) -> int:
    from chalicelib.deps import Deps
    from chalicelib.usecases.sweep import run_sweep

    if args.tenant:
        from chalicelib.domain.names import InvalidName, Tenant

        try:
            Tenant.parse(args.tenant)
        except InvalidName as exc:
            raise OperatorError(ExitCode.USAGE, str(exc)) from None
    deps = Deps.from_session(_session(args))
    result = run_sweep(deps, args.tenant, dry_run=args.dry_run)
    data = result.as_dict()
    _print(args, data, sweep_table(data))
    return 0


def sweep_table(data: dict[str, Any]) -> str:
    """The sweep's report as a table: one line of counts, then one line per action with its reason."""
    what = "dry run (nothing changed)" if data.get("dry_run") else "sweep"
    scope = f"tenant {data['tenant']}" if data.get("tenant") else "every tenant"
    lines = [
        f"{what} of {scope}: {data.get('namespaces', 0)} environment(s), {data.get('stacks', 0)} stack(s), "
        f"{data.get('snapshots', 0)} snapshot(s) looked at in {data.get('seconds', 0)}s"
    ]
    actions = data.get("actions") or []
    if actions:
        rows = [
            (
                str(a.get("status") or "-"),
                str(a.get("kind") or "-"),
                str(a.get("target") or "-"),
                str(a.get("reason") or "") + (f": {a['outcome']}" if a.get("outcome") else ""),
            )
            for a in actions
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(("STATUS", "KIND", "TARGET"))]
        lines.append(
            "  ".join(h.ljust(w) for h, w in zip(("STATUS", "KIND", "TARGET"), widths, strict=True)) + "  REASON"
        )
        lines.extend("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows)
    else:
        lines.append("nothing to do")
    lines.extend(f"error: {e}" for e in data.get("errors") or [])
    return "\n".join(lines)


# parser -------------------------------------------------------------------------------------------
def cmd_soak(args: argparse.Namespace) -> int:
    from tierlift.soak import run_soak

    return run_soak(
        args.tenants, args.promotions, args.faults, args.concurrency, args.seed, args.speed, args.output, args.settle
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from tierlift.bench import main as bench

    argv = ["promotion", "--promotions", str(args.promotions), "--days", str(args.days)]
    return bench([*argv, "--json"] if args.json or args.output == "json" else argv)


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
    common.add_argument(
        "--event-bus-name",
        default=default(None),
        help="tierlift's bus (default: TIERLIFT_EVENT_BUS or tierlift-dev; never the default bus)",
    )
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


DESCRIPTION = """tierlift promotes a tenant's database through its environments (dev -> qa -> prod) as a
versioned snapshot. It talks to AWS like the AWS CLI (your credentials, profile and region), or to the
local cloud with --endpoint-url or AWS_ENDPOINT_URL. Commands put their events on tierlift's bus
(--event-bus-name, TIERLIFT_EVENT_BUS, default tierlift-dev). Every command takes --output table|json.
"tierlift COMMAND --help" shows a command's flags and exit codes; docs/operations.md is the on-call guide."""

# Exit codes every command that talks to AWS may end with (tierlift.errors.ExitCode).
COMMON_CODES = (
    "1 an AWS error (the line names the operation and the error)",
    "2 usage: a bad flag or name (a bare command group prints its help)",
    "5 no AWS credentials, or credentials the endpoint rejects",
    "6 the endpoint cannot be reached",
    "130 interrupted (Ctrl-C)",
    "141 the output pipe closed (tierlift ... | head)",
)
WAIT_CODES = ("--wait: 0 completed, 10 rejected, 11 failed, 12 rolled back, 13 cancelled, 14 timed out (it goes on)",)


def _codes(*own: str | tuple[str, ...]) -> str:
    """A command's exit codes, one a line, for its ``--help`` (docs/operations.md has the table)."""
    lines = [item for entry in (*own, COMMON_CODES) for item in ((entry,) if isinstance(entry, str) else entry)]
    return "exit codes:\n" + "\n".join(f"  {line}" for line in lines)


EPILOG = (
    _codes(
        "0 done",
        "3 unknown tenant, environment or promotion",
        "4 refused before sending anything (the line says why and what to do)",
        WAIT_CODES,
        "snapshot --wait: 11 Snapshot Failed, 14 timed out",
    )
    + "\n\nA bare tierlift prints this help (exit 2). See docs/operations.md."
)


class _Parser(argparse.ArgumentParser):
    """Never guesses: no abbreviated flags (--ver is not --version); help shows the text as written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


def _help_of(parser: argparse.ArgumentParser) -> Any:
    """A bare command group (or a bare ``tierlift``) prints its help and exits 2 (usage)."""

    def show(_: argparse.Namespace) -> int:
        parser.print_help()
        return int(ExitCode.USAGE)

    return show


def parser() -> argparse.ArgumentParser:
    common = _common(top_level=False)
    follow = _follow_flags()
    ledger_default = follow.get_default("ledger")
    top = _Parser(prog="tierlift", description=DESCRIPTION, epilog=EPILOG, parents=[_common(top_level=True)])
    top.set_defaults(func=_help_of(top))
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(group: Any, name: str, text: str, codes: str, *, parents: tuple[Any, ...] = (common,)) -> Any:
        return group.add_parser(name, help=text, description=text, epilog=codes, parents=list(parents))

    local = command(sub, "local", "the local cloud: serve it, bootstrap a tenant in it, its dead letters", _codes())
    local.set_defaults(func=_help_of(local))
    local_sub = local.add_subparsers(dest="local_command", metavar="COMMAND", parser_class=_Parser)
    serve = command(
        local_sub,
        "serve",
        "moto + the AWS events moto lacks + delivery to the handlers, in one process; state in memory "
        "(gone when it stops). --output json prints the timeline as JSON lines",
        _codes("0 stopped"),
    )
    serve.add_argument("--port", type=int, default=4566)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    serve.add_argument("--speed", type=float, default=600.0, help="divide every AWS duration by this")
    serve.add_argument("--faults", help="fault injection JSON, or @FILE (see docs/local-cloud.md)")
    serve.add_argument("--no-schedules", action="store_true", help="never fire scheduled rules on their own")
    serve.add_argument("--concurrency", type=int, default=4, help="invocations in flight at once (1: one at a time)")
    serve.add_argument("--db-instance-quota", type=int, default=40, help="the account's RDS DBInstances quota")
    serve.add_argument("--snapshot-quota", type=int, default=100, help="the account's RDS ManualSnapshots quota")
    serve.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every timeline line, the heartbeats of scheduled handlers that did nothing too",
    )
    serve.add_argument(
        "--handler-log",
        default=str(Path(tempfile.gettempdir()) / "tierlift-local" / "handlers.log"),
        help="where the handlers' JSON logs go ('' for stdout)",
    )
    serve.set_defaults(func=cmd_serve)
    env = command(
        local_sub, "env", 'the export line for a local cloud: eval "$(tierlift local env)"', _codes("0 printed")
    )
    env.add_argument("--port", type=int, default=4566, help="the local cloud's port (without --endpoint-url)")
    env.set_defaults(func=cmd_env)
    person_parser = command(
        local_sub,
        "person",
        "a person's credentials (a role session named after them) for the local cloud: "
        'eval "$(tierlift local person carol)"; the signed API then sees that person',
        _codes("0 printed"),
    )
    person_parser.add_argument("name", help="the session name: the person")
    person_parser.add_argument("--role", default="tierlift-operators", help="the role assumed (tierlift-operators)")
    person_parser.set_defaults(func=cmd_person)
    bootstrap = command(
        local_sub,
        "bootstrap",
        "create common-nonprod/prod and a tenant: its dev DB, qa and prod services, its config; by default qa "
        "is promoted automatically when a dev snapshot completes",
        _codes("0 bootstrapped"),
    )
    bootstrap.add_argument("--tenant", default="xy-0146")
    automatic = bootstrap.add_mutually_exclusive_group()
    automatic.add_argument(
        "--automatic", nargs="+", default=["qa"], metavar="ENV", help="environments promoted automatically (qa)"
    )
    automatic.add_argument("--no-automatic", action="store_true", help="no environment is promoted automatically")
    bootstrap.add_argument(
        "--approval", nargs="+", default=[], metavar="ENV", help="environments whose promotions wait for approve"
    )
    bootstrap.add_argument("--ledger", default=ledger_default, help="the ledger's log group")
    bootstrap.add_argument(
        "--cell",
        metavar="ACCOUNT",
        help="bootstrap the tenant in this 12-digit account (a cell): its resources and role tierlift-cell-<stage> "
        "there, its config (with its cell) in the central SSM",
    )
    bootstrap.add_argument(
        "--cell-external-id",
        metavar="ID",
        help="the external id the cell's role trusts (default: the local cloud's TIERLIFT_CELL_EXTERNAL_ID)",
    )
    bootstrap.set_defaults(func=cmd_bootstrap)
    dlq = command(local_sub, "dlq", "the local cloud's dead-lettered handler invocations", _codes("0 listed"))
    dlq.set_defaults(func=cmd_dlq)

    demo = command(
        sub,
        "demo",
        "the whole pipeline on the local cloud, invariants checked (--output json: the story on stderr, the verdict "
        "on stdout)",
        _codes("0 every check passed", "1 a check failed"),
    )
    demo.add_argument("--speed", type=float, default=600.0)
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds each step may take")
    demo.add_argument("--quiet", action="store_true", help="only the status table and the checks, no timeline")
    demo.set_defaults(func=cmd_demo)

    soak = command(
        sub,
        "soak",
        "a seeded, fault-injected soak on the local cloud",
        _codes("0 no invariant violated", "1 a violation (the report says which)"),
    )
    soak.add_argument("--tenants", type=int, default=5)
    soak.add_argument("--promotions", type=int, default=50)
    soak.add_argument("--faults", default="all", help="all, none, or a comma list (see tierlift/soak.py)")
    soak.add_argument("--concurrency", type=int, default=4)
    soak.add_argument("--seed", type=int, default=1)
    soak.add_argument("--speed", type=float, default=1200.0)
    soak.add_argument("--settle", type=float, default=180.0, help="seconds allowed for the world to settle")
    soak.set_defaults(func=cmd_soak)

    bench = command(sub, "bench", "benchmarks on the local cloud (docs/performance.md)", _codes())
    bench.set_defaults(func=_help_of(bench))
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="COMMAND", parser_class=_Parser)
    promotion_bench = command(
        bench_sub,
        "promotion",
        "promotions driven through local serve's handlers, calls counted server-side",
        _codes("0 measured"),
    )
    promotion_bench.add_argument("--promotions", type=int, default=3)
    promotion_bench.add_argument("--days", type=int, default=0, help="then simulate days of schedules and promotions")
    promotion_bench.add_argument("--json", action="store_true", help="the same as --output json")
    promotion_bench.set_defaults(func=cmd_bench)

    tenant = command(sub, "tenant", "tenant configs", _codes())
    tenant.set_defaults(func=_help_of(tenant))
    tenant_sub = tenant.add_subparsers(dest="tenant_command", metavar="COMMAND", parser_class=_Parser)
    register = command(
        tenant_sub,
        "register",
        "validate a tenant config, check that what it names exists, and store it",
        _codes(
            "0 registered",
            "2 the file does not read or the config does not validate",
            "4 what the config names does not exist (listed; --no-check stores it anyway)",
        ),
    )
    register.add_argument("file", help="the config (JSON; the schema is in docs/contract.md)")
    register.add_argument(
        "--no-check",
        action="store_true",
        help="store it even if what it names does not exist yet (status then warns)",
    )
    register.set_defaults(func=cmd_register)

    not_found = "3 unknown tenant or environment"
    promote = command(
        sub,
        "promote",
        "request a promotion (Promotion Requested)",
        _codes("0 sent", not_found, WAIT_CODES),
        parents=(common, follow),
    )
    promote.add_argument("tenant")
    promote.add_argument("environment")
    promote.add_argument("--version", help="default: what the environment before holds")
    promote.add_argument("--image", help="the image to roll out with it (from the tenant's allowed_images)")
    promote.add_argument("--override", metavar="REASON", help="skip require_completed_before, recorded with why")
    promote.add_argument(
        "--promotion-id",
        metavar="ID",
        help="the request's id and idempotency key (a CI run id): every request with it is one request",
    )
    promote.set_defaults(func=cmd_promote)

    approve = command(
        sub,
        "approve",
        "approve the promotion awaiting approval; with --wait, one still restoring once it reaches the gate",
        _codes("0 sent", not_found, "4 nothing to approve", WAIT_CODES),
        parents=(common, follow),
    )
    approve.add_argument("tenant")
    approve.add_argument("environment")
    approve.add_argument("--promotion-id", help="default: the one in flight")
    approve.set_defaults(func=cmd_approve)

    cancel = command(
        sub,
        "cancel",
        "cancel a promotion in flight or queued",
        _codes("0 sent", not_found, "4 nothing to cancel", WAIT_CODES),
        parents=(common, follow),
    )
    cancel.add_argument("tenant")
    cancel.add_argument("environment")
    cancel.add_argument("--promotion-id", help="default: the one in flight (else the one queued)")
    cancel.add_argument("--reason")
    cancel.set_defaults(func=cmd_cancel)

    rollback = command(
        sub,
        "rollback",
        "promote the previous active version again, from its source snapshot",
        _codes("0 sent", not_found, "4 nothing to roll back to, or its source snapshot is gone", WAIT_CODES),
        parents=(common, follow),
    )
    rollback.add_argument("tenant")
    rollback.add_argument("environment")
    rollback.add_argument("--to", metavar="VERSION", help="default: the version active before the current one")
    rollback.add_argument("--image", help="the image to roll out with it")
    rollback.add_argument("--override", metavar="REASON", help="skip require_completed_before, recorded with why")
    rollback.set_defaults(func=cmd_rollback)

    snapshot = command(
        sub,
        "snapshot",
        "take a source snapshot (Snapshot Requested)",
        _codes(
            "0 sent (--wait: the snapshot is available)", "3 unknown tenant", "--wait: 11 Snapshot Failed, 14 timed out"
        ),
        parents=(common, follow),
    )
    snapshot.add_argument("tenant")
    snapshot.set_defaults(func=cmd_snapshot)

    status = command(
        sub,
        "status",
        "what is active where: every tenant, or one (with what its config names that does not exist)",
        _codes("0 shown", "3 unknown tenant"),
    )
    status.add_argument("tenant", nargs="?")
    status.add_argument("--all", action="store_true", help="every environment, idle ones too")
    status.set_defaults(func=cmd_status)

    history = command(
        sub,
        "history",
        "every request in the ledger, once each, with its stages",
        _codes("0 shown", "3 unknown tenant or environment, or no ledger"),
    )
    history.add_argument("tenant")
    history.add_argument("environment", nargs="?")
    history.add_argument("--since", help="30m, 12h, 7d, an ISO date/time or YYYYMMDDHHMMSS (default: all kept)")
    history.add_argument("--ledger", default=ledger_default, help="the ledger's log group")
    history.set_defaults(func=cmd_history)

    sweep = command(
        sub, "sweep", "run the sweep now (orphans, stuck promotions, retention)", _codes("0 swept (or planned)")
    )
    sweep.add_argument("tenant", nargs="?")
    sweep.add_argument("--dry-run", action="store_true", help="plan only; change nothing")
    sweep.set_defaults(func=cmd_sweep)

    doctor = command(
        sub,
        "doctor",
        "read-only preflight of the account (docs/deploy.md)",
        _codes("0 every check ok", "1 something is missing (each line says what fixes it)"),
    )
    doctor.add_argument("--stage", help="check the bus tierlift-<stage> (default: the CLI's bus)")
    doctor.add_argument("--tenant", help="also check this tenant's config, dev DB, services and images")
    doctor.set_defaults(func=cmd_doctor)

    dlq_top = command(sub, "dlq", "the deployed pipeline's dead-letter queues", _codes())
    dlq_top.set_defaults(func=_help_of(dlq_top))
    redrive = command(
        dlq_top.add_subparsers(dest="dlq_command", metavar="COMMAND", parser_class=_Parser),
        "redrive",
        "send dead-lettered events back (put-events, or re-invoke for AWS events)",
        _codes("0 sent back (or kept)", "1 one could not be sent back (the report says which)"),
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
    redrive.add_argument("--ledger", default=ledger_default, help="the ledger's log group (old requests)")
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


def _closed_pipe() -> int:
    """The reader went away (``| head``): stop quietly. Python would report the unflushed output's
    BrokenPipeError at exit; pointing stdout at /dev/null first keeps that quiet too."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return int(ExitCode.CLOSED_PIPE)


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or "AWS"


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and an :class:`ExitCode`, never a traceback."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        args = parser().parse_args(argv)
    except BrokenPipeError:
        return _closed_pipe()
    except SystemExit:  # --help, or a usage error: argparse printed and exits; flush while it can be caught
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _closed_pipe()
        raise
    if getattr(args, "event_bus_name", None):
        os.environ["TIERLIFT_EVENT_BUS"] = args.event_bus_name  # read by _event_bus() and the local cloud
    from botocore import exceptions as bx

    def fail(code: ExitCode, message: str) -> int:
        print(f"tierlift: {message}", file=sys.stderr)
        return int(code)

    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here at the latest, inside the handler below
        return code
    except BrokenPipeError:
        return _closed_pipe()
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
