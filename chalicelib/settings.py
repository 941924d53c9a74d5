"""Run-time settings, read once from the Lambda's environment (``.chalice/config.json``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from chalicelib.domain.cells import Cell
from chalicelib.domain.records import NamedTuple

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "database.yaml"
DEFAULT_EVENT_BUS = "tierlift-dev"
DEFAULT_STAGE_TIMEOUTS: Mapping[str, int] = MappingProxyType(
    {
        "requested": 900,
        "restoring": 7200,
        "deploying": 3600,
        "ending": 1800,
    }
)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {name}={raw!r} is not an integer") from None


class Settings(NamedTuple):
    """The pipeline's settings, from the function's environment (``TIERLIFT_*``). A NamedTuple, not a
    frozen dataclass (~2 ms of every cold start for its 17 fields); ``settings._replace(...)`` for a
    variant. ``stage_timeouts`` is read-only by default (one mapping shared by every default)."""

    ssm_root: str = "/tierlift"
    # tierlift's own bus (tierlift-<stage>; .chalice/config.json sets it per stage): its rules listen there,
    # never on the default bus, where any principal with events:PutEvents on * could send source tierlift
    event_bus: str = DEFAULT_EVENT_BUS
    template_path: Path = DEFAULT_TEMPLATE
    grace_seconds: int = 3600
    final_snapshot_retention_days: int = 7
    source_snapshots_kept: int = 5
    stage_timeouts: Mapping[str, int] = DEFAULT_STAGE_TIMEOUTS
    # A claim outlives any Lambda invocation (15 minutes at most) before another may take it over.
    claim_lease_seconds: int = 960
    # Transition logs of ended requests are kept this long: re-deliveries within it are recognised.
    ended_retention_seconds: int = 86400
    # The CloudFormation service role passed as RoleARN to CreateStack/DeleteStack (unset locally).
    cfn_role_arn: str | None = None
    # SSM reads per second this process may make (0: no pacing). The sweep paces itself to half of
    # SSM's default 40 TPS, which the promotions share (docs/scale.md).
    ssm_reads_per_second: float = 0.0
    # EventBridge Scheduler: the stage's schedule group of snapshot schedules, the role they put events
    # on tierlift's bus with, and that bus's ARN (the packaged template sets all three).
    schedule_group: str = "tierlift-dev"
    scheduler_role_arn: str | None = None
    event_bus_arn: str | None = None
    # Account cells (docs/scale.md): the central account's id (the account AWS events of tenants without
    # a cell must come from; unset: not checked) and the external id tierlift passes when it assumes a
    # cell's role (a per-deployment secret of the packaged template, never in a tenant's config or an event).
    central_account: str | None = None
    cell_external_id: str | None = None

    @property
    def cell_role_name(self) -> str:
        """The cells' role (``templates/cell.yaml``): ``tierlift-cell-<stage>``, the stage of tierlift's bus."""
        return "tierlift-cell-" + self.event_bus.removeprefix("tierlift-")

    def cell_cfn_role(self, cell: Cell) -> str | None:
        """The CloudFormation service role in ``cell`` (``templates/cell.yaml``: the cell role's name +
        ``-cloudformation``), where the deployment passes one centrally; None otherwise."""
        if not self.cfn_role_arn:
            return None
        return f"{cell.role_arn}-cloudformation"

    @classmethod
    def from_env(cls) -> Settings:
        root = os.environ.get("TIERLIFT_SSM_ROOT", "/tierlift").rstrip("/") or "/tierlift"
        if not root.startswith("/"):
            raise ValueError(f"TIERLIFT_SSM_ROOT={root!r} must start with '/'")
        timeouts = {
            stage: _int(f"TIERLIFT_TIMEOUT_{stage.upper()}", default)
            for stage, default in DEFAULT_STAGE_TIMEOUTS.items()
        }
        template = os.environ.get("TIERLIFT_TEMPLATE")
        return cls(
            ssm_root=root,
            event_bus=os.environ.get("TIERLIFT_EVENT_BUS") or DEFAULT_EVENT_BUS,
            template_path=Path(template) if template else DEFAULT_TEMPLATE,
            grace_seconds=_int("TIERLIFT_GRACE_SECONDS", 3600),
            final_snapshot_retention_days=_int("TIERLIFT_FINAL_SNAPSHOT_RETENTION_DAYS", 7),
            source_snapshots_kept=_int("TIERLIFT_SOURCE_SNAPSHOTS_KEPT", 5),
            stage_timeouts=timeouts,
            claim_lease_seconds=_int("TIERLIFT_CLAIM_LEASE_SECONDS", 960),
            ended_retention_seconds=_int("TIERLIFT_ENDED_RETENTION_SECONDS", 86400),
            cfn_role_arn=os.environ.get("TIERLIFT_CFN_ROLE_ARN") or None,
            ssm_reads_per_second=float(os.environ.get("TIERLIFT_SSM_READS_PER_SECOND") or 0),
            schedule_group=os.environ.get("TIERLIFT_SCHEDULE_GROUP") or "tierlift-dev",
            scheduler_role_arn=os.environ.get("TIERLIFT_SCHEDULER_ROLE_ARN") or None,
            central_account=os.environ.get("TIERLIFT_CENTRAL_ACCOUNT") or None,
            cell_external_id=os.environ.get("TIERLIFT_CELL_EXTERNAL_ID") or None,
            event_bus_arn=os.environ.get("TIERLIFT_EVENT_BUS_ARN") or None,
        )
