"""Run-time settings, read once from the Lambda's environment (``.chalice/config.json``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "database.yaml"
DEFAULT_STAGE_TIMEOUTS = {"requested": 900, "restoring": 7200, "deploying": 3600, "finalizing": 1800}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {name}={raw!r} is not an integer") from None


@dataclass(frozen=True)
class Settings:
    ssm_root: str = "/tierlift"
    event_bus: str = "default"
    template_path: Path = DEFAULT_TEMPLATE
    grace_seconds: int = 3600
    final_snapshot_retention_days: int = 7
    source_snapshots_kept: int = 5
    stage_timeouts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STAGE_TIMEOUTS))

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
            event_bus=os.environ.get("TIERLIFT_EVENT_BUS", "default"),
            template_path=Path(template) if template else DEFAULT_TEMPLATE,
            grace_seconds=_int("TIERLIFT_GRACE_SECONDS", 3600),
            final_snapshot_retention_days=_int("TIERLIFT_FINAL_SNAPSHOT_RETENTION_DAYS", 7),
            source_snapshots_kept=_int("TIERLIFT_SOURCE_SNAPSHOTS_KEPT", 5),
            stage_timeouts=timeouts,
        )
