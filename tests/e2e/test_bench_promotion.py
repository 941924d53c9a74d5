"""``python -m tierlift bench promotion`` measures the real path, and its poll count can move."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def bench(*extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tierlift.bench", "promotion", "--json", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_promotion_costs_at_most_30_calls_and_6_ssm_writes_without_polls() -> None:
    result = bench("--promotions", "2", "--days", "2")
    steady = result["steady_state"]
    assert steady["calls"] <= 30 and steady["ssm_writes"] <= 6, steady
    assert result["polls"] == 0
    assert set(steady["by_handler"]) >= {"promotion_requested", "stack_status", "deployment_state"}
    assert result["params_per_tenant_at_rest"] <= 8, result["params_at_rest"]


def test_a_planted_poll_is_counted() -> None:
    assert bench("--promotions", "1", "--plant-poll")["polls"] >= 1
