"""Schedules fire at their (scaled) rate: a separate ``local serve`` with schedules on."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.conftest import start_serve, stop_serve


def test_the_sweep_schedule_fires_at_its_scaled_rate(tmp_path: Path) -> None:
    # rate(1 minute) at speed x120: every half second.
    process, cloud = start_serve(
        # -v: a sweep with nothing to do is a heartbeat, folded into one line a minute without it
        tmp_path / "serve.log",
        "--speed",
        "120",
        "-v",
        env={"TIERLIFT_SWEEP_SCHEDULE": "rate(1 minute)"},
    )
    try:

        def rules() -> dict[str, dict[str, str]]:
            return {r["Name"]: r for r in cloud.events.list_rules().get("Rules", [])}

        # The server answers before it has created the rules: wait for them rather than race.
        cloud.wait(lambda: "tierlift-local-sweep" in rules(), "the sweep's schedule rule", timeout=20)
        assert rules()["tierlift-local-sweep"]["ScheduleExpression"] == "rate(1 minute)"
        cloud.wait(lambda: cloud.log.read_text().count("λ sweep ") >= 3, "three scheduled sweeps", timeout=20)
        started = time.monotonic()
        before = cloud.log.read_text().count("aws.events: Scheduled Event")
        cloud.wait(
            lambda: cloud.log.read_text().count("aws.events: Scheduled Event") >= before + 2, "two more", timeout=20
        )
        assert time.monotonic() - started >= 0.5  # not faster than the rate
    finally:
        stop_serve(process)
