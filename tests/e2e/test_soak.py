"""The short seeded soak: every fault, concurrency 4, invariants checked (``tierlift/soak.py``).

Run as ``python -m tierlift soak`` in a subprocess (the local cloud never shares a process with
``mock_aws``); the long one is ``make soak``.
"""

from __future__ import annotations

import json

from tests.e2e.conftest import run

COMMAND = ["--tenants", "4", "--promotions", "40", "--faults", "all", "--concurrency", "4", "--seed", "7"]


def test_short_soak_with_every_fault_keeps_the_invariants() -> None:
    import sys

    done = run([sys.executable, "-m", "tierlift", "soak", *COMMAND, "--output", "json"], timeout=170)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["settled"], report
    assert report["violations"] == [], json.dumps(report["violations"], indent=1)
    assert report["requests"] >= 40
    assert set(report["terminal_events_per_request"]) <= {"1", "2"}
    # Every fault was really injected, and the deletes were checked as they happened.
    injected = report["faults_injected"]
    assert injected["handler_crashes"] > 0 and injected["duplicate_deliveries"] > 0
    assert injected["dropped_events"] > 0
    assert report["outcomes"].get("Promotion Completed", 0) > 0
    assert report["deletes_checked"].get("cloudformation:DeleteStack", 0) > 0
    # The poison request failed all three attempts and was dead-lettered; the operator's redrive sent it
    # back with its id, and it ended once (no request is without a terminal event: violations above).
    poisoned = [d for d in report["dead_letters"] if "injected poison" in d["error"]]
    assert poisoned and all(d["handler"] == "promotion_requested" and d["attempts"] == 3 for d in poisoned)
    redriven = [r for r in report["redriven"] if r["detail_type"] == "Promotion Requested"]
    assert redriven and all(r["done"] and r["action"] == "invoke" for r in redriven)
    assert done.returncode == 0
