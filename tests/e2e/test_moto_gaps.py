"""The moto gap fixes in synchronous mode (no emulator), in a subprocess of their own."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.e2e.conftest import REPO, run


def test_gap_fixes_without_the_emulator() -> None:
    script = Path(__file__).with_name("sync_gaps_script.py")
    result = run([sys.executable, str(script)], timeout=120, PYTHONPATH=str(REPO))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gaps ok" in result.stdout
