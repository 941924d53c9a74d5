"""What is active where: one row per tenant and environment, from the recorded state in SSM.

``tierlift status`` (every tenant) reads the whole SSM root with one paginated walk
(``StateStore.walk``) and the shown services' task definitions with ``DescribeServices`` (ten
services a call); ``tierlift status TENANT`` adds each environment's DB stack and service rollout.
Everything here but :func:`overview` and :func:`tenant_status` is a pure function of what was read.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.adapters.ssm import SsmStateStore
from chalicelib.adapters.state import StateStore
from chalicelib.domain.config import InvalidConfig, parse_config
from chalicelib.domain.model import EnvRecord, Outcome, Stage, UnknownTenant
from chalicelib.domain.names import Tenant
from tierlift.history import duration
from tierlift.output import cell, iso, when

ATTENTION_WINDOW = timedelta(hours=24)
"""A last outcome other than completed keeps a row on the default screen this long."""


@dataclass
class EnvStatus:
    """One environment of one tenant, as recorded (the row of ``status``)."""

    namespace: str
    tenant: str
    environment: str
    active: str | None = None
    active_since: datetime | None = None
    snapshot: str | None = None
    endpoint: str | None = None
    stack: str | None = None
    cluster: str | None = None
    service: str | None = None
    task_definition: str | None = None
    stage: str | None = None
    stage_since: datetime | None = None
    promotion_id: str | None = None
    promotion_version: str | None = None
    requested_by: str | None = None
    queued: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] | None = None
    error: str | None = None
    warning: str | None = None  # the service or cluster its config names is not there

    def busy(self) -> bool:
        return self.stage is not None or bool(self.queued)

    def attention(self, now: datetime) -> bool:
        """Not idle: in flight, something queued, or a recent outcome other than completed."""
        if self.busy() or self.error or self.warning:
            return True
        if self.last and self.last.get("outcome") not in (None, Outcome.COMPLETED):
            at = when(self.last.get("at"))
            return at is None or now - at <= ATTENTION_WINDOW
        return False

    def as_dict(self, now: datetime) -> dict[str, Any]:
        data = asdict(self)
        data["active_since"] = iso(self.active_since)
        data["stage_since"] = iso(self.stage_since)
        data["queued"] = [{**q, "requested_at": iso(q.get("requested_at"))} for q in self.queued]
        if self.last is not None:
            data["last"] = {**self.last, "at": iso(self.last.get("at"))}
        data["active_age_seconds"] = _seconds(now, self.active_since)
        data["stage_seconds"] = _seconds(now, self.stage_since)
        return data


def _seconds(now: datetime, since: datetime | None) -> int | None:
    return int((now - since).total_seconds()) if since else None


# --------------------------------------------------------------------------------------------------
# From the recorded state (chalicelib.domain.model.EnvRecord, as StateStore.read gives it) to rows
# --------------------------------------------------------------------------------------------------
def from_recorded(recorded: EnvRecord) -> EnvStatus | None:
    """The row of one namespace's recorded state; None for the source environment (never a target)."""
    ns = recorded.namespace
    row = EnvStatus(ns.name, ns.tenant.name, ns.environment)
    try:
        config = recorded.config()
    except (UnknownTenant, InvalidConfig) as exc:
        row.error = str(exc)
        return row
    if ns.environment == config.source_environment:
        return None
    target = config.targets.get(ns.environment)
    if target is None:
        row.error = f"environment {ns.environment} is not in {ns.tenant}'s config"
        return row
    row.cluster, row.service = target.cluster, target.service
    if recorded.active is not None:
        row.active = recorded.active.value
        row.active_since = when(recorded.active_since)
        db = recorded.db.get(recorded.active.value)
        if db is not None:
            row.snapshot, row.endpoint, row.stack = db.snapshot, db.endpoint, db.stack
        else:
            row.snapshot, row.stack = config.source.snapshot_id(recorded.active), ns.stack_name(recorded.active)
    promotion = recorded.promotion
    if promotion is not None:
        row.stage = str(promotion.stage)
        row.stage_since = when(promotion.updated)
        row.promotion_id = promotion.id
        row.promotion_version = str(promotion.version)
        row.requested_by = promotion.requested_by
    row.queued = [
        {"id": q.id, "version": q.version, "requested_by": q.requested_by, "requested_at": q.requested_at}
        for q in recorded.waiting
    ]
    last = recorded.last
    if last is not None:
        row.last = {
            "promotion_id": last.promotion_id,
            "version": last.version,
            "outcome": last.outcome,
            "reason": last.reason,
            "at": last.at,
        }
    return row


def rows_from(recorded: Iterable[EnvRecord]) -> list[EnvStatus]:
    rows = [row for row in (from_recorded(r) for r in recorded) if row is not None]
    return sorted(rows, key=lambda r: (r.tenant, r.environment))


def task_definitions(ecs: Any, rows: list[EnvStatus]) -> None:
    """Fill ``task_definition`` (``family:revision``) from ECS: DescribeServices, ten services a call."""
    by_cluster: dict[str, list[EnvStatus]] = {}
    for row in rows:
        if row.cluster and row.service:
            by_cluster.setdefault(row.cluster, []).append(row)
    for cluster, members in by_cluster.items():
        for start in range(0, len(members), 10):
            batch = members[start : start + 10]
            try:
                found = ecs.describe_services(cluster=cluster, services=[r.service for r in batch])["services"]
            except ClientError as exc:
                if exc.response["Error"]["Code"] in ("ClusterNotFoundException", "ClusterNotFound"):
                    for row in batch:
                        row.warning = f"ECS cluster {cluster} does not exist"
                    continue
                raise
            live = {s["serviceName"]: s for s in found if s.get("status") != "INACTIVE"}
            for row in batch:
                service = live.get(row.service or "")
                if service:
                    row.task_definition = str(service["taskDefinition"]).rsplit("/", 1)[-1]
                elif row.active:  # before its first promotion the pipeline may create it
                    row.warning = f"ECS service {row.service} does not exist in {cluster}"


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
STAGE_ORDER: dict[str, int] = {Stage.AWAITING_APPROVAL: 0, Stage.DEPLOYING: 1, Stage.ENDING: 1, Stage.RESTORING: 2}


def _cut(text: str | None, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def _queue_text(row: EnvStatus) -> str:
    if not row.queued:
        return "-"
    first = row.queued[0]
    more = f" +{len(row.queued) - 1}" if len(row.queued) > 1 else ""
    return f"{first.get('version') or '(default)'}{more}"


def _last_text(row: EnvStatus) -> str:
    if not row.last:
        return "-"
    text = f"{row.last.get('outcome')} {row.last.get('version') or ''}".strip()
    failed = row.last.get("reason") and row.last.get("outcome") != Outcome.COMPLETED
    return f"{text}: {row.last['reason']}" if failed else text


# What on-call needs first is on the left; the line is cut to the terminal's width, so on a narrow one
# the columns on the right (task definition, snapshot, endpoint) go first. --output json has everything.
COLUMNS: tuple[tuple[str, int], ...] = (
    ("NAMESPACE", 24),
    ("ACTIVE", 14),
    ("AGE", 6),
    ("IN FLIGHT", 32),
    ("FOR", 6),
    ("QUEUED", 17),
    ("LAST", 48),
    ("TASK DEF", 24),
    ("SNAPSHOT", 38),
    ("DB ENDPOINT", 64),
)


def _cells(row: EnvStatus, now: datetime) -> list[str]:
    if row.error:
        return [row.namespace, "?", "", "", "", "", f"error: {row.error}", "", "", ""]
    last = f"warning: {row.warning}" if row.warning and not row.last else _last_text(row)
    in_flight = f"{row.stage} {row.promotion_version}" if row.stage else "-"
    return [
        row.namespace,
        row.active or "-",
        duration((now - row.active_since).total_seconds()) if row.active_since else "-",
        in_flight,
        duration((now - row.stage_since).total_seconds()) if row.stage_since and row.stage else "-",
        _queue_text(row),
        last,
        row.task_definition or "-",
        row.snapshot or "-",
        row.endpoint or "-",
    ]


def render_rows(rows: list[EnvStatus], now: datetime, width: int | None = None) -> list[str]:
    """The header and one line per row; every cell cut to its column, the line cut to ``width``."""
    widths = [w for _, w in COLUMNS]
    cells = [[_cut(c, w) for c, w in zip(_cells(row, now), widths, strict=True)] for row in rows]
    used = [max([len(name)] + [len(r[i]) for r in cells]) for i, (name, _) in enumerate(COLUMNS)]

    def line(values: list[str]) -> str:
        text = "  ".join(v.ljust(w) for v, w in zip(values, used, strict=True)).rstrip()
        return _cut(text, width) if width else text

    return [line([name for name, _ in COLUMNS]), *(line(r) for r in cells)]


def summary_line(rows: list[EnvStatus], now: datetime) -> str:
    tenants = len({r.tenant for r in rows})
    in_flight = [r for r in rows if r.stage]
    awaiting = sum(1 for r in in_flight if r.stage == Stage.AWAITING_APPROVAL)
    queued = sum(1 for r in rows if r.queued)
    bad = sum(1 for r in rows if not r.busy() and r.attention(now))
    idle = sum(1 for r in rows if not r.attention(now))
    never = sum(1 for r in rows if not r.active and not r.error)
    return (
        f"{tenants} tenant(s), {len(rows)} environment(s): {len(in_flight)} in flight"
        f" ({awaiting} awaiting approval), {queued} with a queue, {bad} ended badly in the last"
        f" {int(ATTENTION_WINDOW.total_seconds() // 3600)}h, {idle} idle; {never} never promoted"
    )


def render_overview(
    rows: list[EnvStatus], now: datetime, *, show_all: bool = False, height: int = 24, width: int | None = None
) -> str:
    """One screen: the summary, then the rows that need a look (in flight first), cut to ``height``.

    ``show_all`` lists every row (for a pager or a file). The cut is said in the last line.
    """
    if show_all:
        shown, hidden = rows, 0
    else:
        interesting = [r for r in rows if r.attention(now)]
        interesting.sort(
            key=lambda r: (
                0 if r.stage else 1 if r.queued else 2,
                STAGE_ORDER.get(r.stage or "", 9),
                r.namespace,
            )
        )
        room = max(3, height - 4)  # summary, header, the cut line, the prompt
        shown, hidden = interesting[:room], max(0, len(interesting) - room)
    lines = [summary_line(rows, now)]
    if shown:
        lines.extend(render_rows(shown, now, width))
    elif not show_all:
        lines.append("nothing in flight, queued or failed recently (--all lists every environment)")
    if hidden:
        lines.append(f"… {hidden} more not shown: tierlift status --all (or --output json)")
    elif not show_all and rows:
        lines.append("idle environments not shown: tierlift status --all")
    return "\n".join(lines)


def terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size((200, 24))
    return size.lines, size.columns


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def overview(
    session: boto3.session.Session, store: StateStore, *, with_services: Callable[[EnvStatus], bool]
) -> list[EnvStatus]:
    """Every tenant's rows from one paginated walk of the SSM root; task definitions where asked."""
    rows = rows_from(store.walk())
    task_definitions(session.client("ecs"), [r for r in rows if with_services(r)])
    return rows


def tenant_status(session: boto3.session.Session, tenant: str, ssm_root: str = "/tierlift") -> list[dict[str, Any]]:
    """One row per environment of the tenant's config (the source environment included), with the
    active DB stack's status, the service's task definition, image and rollout, and what the config names
    that does not exist (``missing``: :mod:`tierlift.preflight`)."""
    from tierlift.preflight import CheckFailed, missing

    parsed = Tenant.parse(tenant)
    ssm, cfn, ecs = session.client("ssm"), session.client("cloudformation"), session.client("ecs")
    store = SsmStateStore(ssm, ssm_root)
    record = store.read_tenant(parsed)  # the config and every environment, from one listing
    if record.config_text is None:
        raise UnknownTenant(f"tenant {parsed} has no config at {record.config_path}")
    config = parse_config(parsed, record.config_text)
    now = datetime.now(UTC)
    try:
        absent = missing(session, config)
        unchecked = None
    except CheckFailed as exc:
        absent, unchecked = [], str(exc)
    out: list[dict[str, Any]] = []
    for env in config.environments:
        ns = config.namespace(env)
        if env == config.source_environment:
            source = EnvStatus(ns.name, ns.tenant.name, env).as_dict(now)
            source.update(source=True, db_instance=config.source_db_instance)
        else:
            row = from_recorded(record.env(env))
            assert row is not None
            source = row.as_dict(now)
            source.update(source=False, db_instance=None)
            _live(cfn, ecs, config.targets[env], row, source)
        source["missing"] = [m.what for m in absent if m.environment == env]
        source["unchecked"] = unchecked
        out.append(source)
    return out


def _live(cfn: Any, ecs: Any, target: Any, row: EnvStatus, data: dict[str, Any]) -> None:
    """The DB stack's status and the service's task definition, image, version and rollout."""
    data.update(stack_status=None, image=None, version_in_task=None, rollout=None)
    if row.stack:
        try:
            data["stack_status"] = cfn.describe_stacks(StackName=row.stack)["Stacks"][0]["StackStatus"]
        except ClientError:
            data["stack_status"] = "missing"
    try:
        services = ecs.describe_services(cluster=target.cluster, services=[target.service]).get("services", [])
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("ClusterNotFoundException", "ClusterNotFound"):
            raise
        services = []
    live = [s for s in services if s.get("status") != "INACTIVE"]
    if not live:
        return
    service = live[0]
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    container = next(
        (c for c in task["containerDefinitions"] if c["name"] == target.container),
        task["containerDefinitions"][0],
    )
    env_vars = {e["name"]: e["value"] for e in container.get("environment", [])}
    primary: dict[str, Any] = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {})
    data["task_definition"] = f"{task['family']}:{task['revision']}"
    data["image"] = container.get("image")
    data["version_in_task"] = env_vars.get("TIERLIFT_VERSION")
    data["rollout"] = primary.get("rolloutState")
    data["deployments"] = len(service.get("deployments", []))


TENANT_COLUMNS = (
    "namespace",
    "active",
    "age",
    "in_flight",
    "for",
    "queued",
    "stack",
    "db",
    "task_definition",
    "image",
    "rollout",
    "last",
)


def _tenant_cells(row: dict[str, Any]) -> dict[str, str]:
    cells = {k: cell(row.get(k)) for k in TENANT_COLUMNS}
    if row.get("source"):
        cells.update(active="(source)", db=cell(row.get("db_instance")))
    else:
        cells["db"] = cell(row.get("endpoint"))
    cells["stack"] = cell(row.get("stack_status"))
    cells["age"] = duration(row["active_age_seconds"]) if row.get("active_age_seconds") is not None else "-"
    cells["for"] = duration(row["stage_seconds"]) if row.get("stage_seconds") is not None and row.get("stage") else "-"
    cells["queued"] = ", ".join(str(q.get("version") or "(default)") for q in row.get("queued") or []) or "-"
    if row.get("rollout"):
        cells["rollout"] = f"{row['rollout']} ({row.get('deployments', 0)})"
    last = row.get("last")
    if last:
        failed = last.get("reason") and last["outcome"] != Outcome.COMPLETED
        cells["last"] = f"{last['outcome']} {last.get('version') or ''}".strip() + (
            f": {last['reason']}" if failed else ""
        )
    else:
        cells["last"] = "-"
    cells["in_flight"] = f"{row['stage']} {row.get('promotion_version') or ''}".strip() if row.get("stage") else "-"
    return cells


def warnings(rows: list[dict[str, Any]]) -> list[str]:
    """The lines under ``status TENANT``'s table: what its config names that does not exist."""
    out = [f"warning: {r['namespace']}: {what} does not exist" for r in rows for what in r.get("missing") or []]
    unchecked = next((r["unchecked"] for r in rows if r.get("unchecked")), None)
    if unchecked:
        out.append(f"warning: {unchecked}: what the config names was not checked")
    if out and not unchecked:
        out.append("create what is missing (docs/deploy.md), or fix the config and register it again")
    return out


def render_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = TENANT_COLUMNS) -> str:
    """A plain text table of :func:`tenant_status` rows; long values are cut to keep it readable."""
    cells = [[_cut(_tenant_cells(row).get(c, "-"), 60) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.upper().replace("_", " ").ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([line.rstrip(), *body, *warnings(rows)])
