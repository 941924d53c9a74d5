"""What is active where: one row per tenant and environment, from the recorded state in SSM.

``tierlift status`` (every tenant) reads the whole SSM root with one paginated walk
(``StateStore.all_recorded``) and the shown services' task definitions with ``DescribeServices`` (ten
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

from chalicelib.config import InvalidConfig
from chalicelib.names import Tenant
from chalicelib.state import Outcome, Recorded, Stage, StateStore, UnknownTenant
from tierlift.history import duration

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

    def busy(self) -> bool:
        return self.stage is not None or bool(self.queued)

    def attention(self, now: datetime) -> bool:
        """Not idle: in flight, something queued, or a recent outcome other than completed."""
        if self.busy() or self.error:
            return True
        if self.last and self.last.get("outcome") not in (None, Outcome.COMPLETED):
            at = _when(self.last.get("at"))
            return at is None or now - at <= ATTENTION_WINDOW
        return False

    def as_dict(self, now: datetime) -> dict[str, Any]:
        data = asdict(self)
        data["active_since"] = self.active_since.isoformat() if self.active_since else None
        data["stage_since"] = self.stage_since.isoformat() if self.stage_since else None
        data["active_age_seconds"] = _seconds(now, self.active_since)
        data["stage_seconds"] = _seconds(now, self.stage_since)
        return data


def _seconds(now: datetime, since: datetime | None) -> int | None:
    return int((now - since).total_seconds()) if since else None


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# From the recorded state (chalicelib.state.Recorded) to rows
# --------------------------------------------------------------------------------------------------
def from_recorded(recorded: Recorded) -> EnvStatus | None:
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
        row.active_since = _when(recorded.active_since)
        db = recorded.db.get(recorded.active.value)
        if db is not None:
            row.snapshot, row.endpoint, row.stack = db.snapshot, db.endpoint, db.stack
        else:
            row.snapshot, row.stack = config.source.snapshot_id(recorded.active), ns.stack_name(recorded.active)
    promotion = recorded.promotion
    if promotion is not None:
        row.stage = str(promotion.stage)
        row.stage_since = _when(promotion.updated)
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


def rows_from(recorded: Iterable[Recorded]) -> list[EnvStatus]:
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
                    continue
                raise
            live = {s["serviceName"]: s for s in found if s.get("status") != "INACTIVE"}
            for row in batch:
                service = live.get(row.service or "")
                if service:
                    row.task_definition = str(service["taskDefinition"]).rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
STAGE_ORDER: dict[str, int] = {Stage.AWAITING_APPROVAL: 0, Stage.DEPLOYING: 1, Stage.FINALIZING: 1, Stage.RESTORING: 2}


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
    in_flight = f"{row.stage} {row.promotion_version}" if row.stage else "-"
    return [
        row.namespace,
        row.active or "-",
        duration((now - row.active_since).total_seconds()) if row.active_since else "-",
        in_flight,
        duration((now - row.stage_since).total_seconds()) if row.stage_since and row.stage else "-",
        _queue_text(row),
        _last_text(row),
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
    rows = rows_from(store.all_recorded())
    task_definitions(session.client("ecs"), [r for r in rows if with_services(r)])
    return rows


def tenant_status(session: boto3.session.Session, tenant: str, ssm_root: str = "/tierlift") -> list[dict[str, Any]]:
    """One row per environment of the tenant's config (the source environment included), with the
    active DB stack's status and the service's task definition, image and rollout."""
    parsed = Tenant.parse(tenant)
    ssm, cfn, ecs = session.client("ssm"), session.client("cloudformation"), session.client("ecs")
    store = StateStore(ssm, ssm_root)
    config = store.get_config(parsed)
    now = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    for env in config.environments:
        ns = config.namespace(env)
        if env == config.source_environment:
            out.append(
                {
                    "namespace": ns.name,
                    "environment": env,
                    "active": "(source)",
                    "db": config.source_db_instance,
                    "stack": "-",
                    "service": "-",
                }
            )
            continue
        recorded = store.recorded(ns)
        row = from_recorded(recorded)
        assert row is not None
        if recorded.active is not None and not row.endpoint:  # recorded() reads no db records: this one
            db = store.get_db(ns, recorded.active) or {}
            row.endpoint, row.snapshot = db.get("endpoint"), db.get("snapshot") or row.snapshot
        data = row.as_dict(now)
        data.update(stack="-", db=row.endpoint or "-", service="-", image="-", version_in_task="-", rollout="-")
        data["active"] = row.active or "-"
        data["in_flight"] = row.stage or "-"
        if row.stack:
            try:
                data["stack"] = cfn.describe_stacks(StackName=row.stack)["Stacks"][0]["StackStatus"]
            except ClientError:
                data["stack"] = "(missing)"
        target = config.targets[env]
        services = ecs.describe_services(cluster=target.cluster, services=[target.service]).get("services", [])
        live = [s for s in services if s.get("status") != "INACTIVE"]
        if live:
            service = live[0]
            task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
            container = next(
                (c for c in task["containerDefinitions"] if c["name"] == target.container),
                task["containerDefinitions"][0],
            )
            env_vars = {e["name"]: e["value"] for e in container.get("environment", [])}
            primary: dict[str, Any] = next(
                (d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {}
            )
            data["task_definition"] = f"{task['family']}:{task['revision']}"
            data["service"] = f"{target.service}:{task['revision']}"
            data["image"] = container.get("image", "-")
            data["version_in_task"] = env_vars.get("TIERLIFT_VERSION", "-")
            data["rollout"] = f"{primary.get('rolloutState', '-')} ({len(service.get('deployments', []))})"
        out.append(data)
    return out


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
    cells = {k: str(row.get(k) if row.get(k) is not None else "-") for k in TENANT_COLUMNS}
    cells["age"] = duration(row["active_age_seconds"]) if row.get("active_age_seconds") is not None else "-"
    cells["for"] = duration(row["stage_seconds"]) if row.get("stage_seconds") is not None and row.get("stage") else "-"
    cells["queued"] = ", ".join(str(q.get("version") or "(default)") for q in row.get("queued") or []) or "-"
    last = row.get("last")
    if last:
        failed = last.get("reason") and last["outcome"] != Outcome.COMPLETED
        cells["last"] = f"{last['outcome']} {last.get('version') or ''}".strip() + (
            f": {last['reason']}" if failed else ""
        )
    else:
        cells["last"] = "-"
    if row.get("stage"):
        cells["in_flight"] = f"{row['stage']} {row.get('promotion_version') or ''}".strip()
    return cells


def render_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = TENANT_COLUMNS) -> str:
    """A plain text table of :func:`tenant_status` rows; long values are cut to keep it readable."""
    cells = [[_cut(_tenant_cells(row).get(c, "-"), 60) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.upper().replace("_", " ").ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([line.rstrip(), *body])
