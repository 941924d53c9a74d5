"""The operator's first hour against ``local serve`` (issue 20): a tenant of one's own is refused with what
is missing; a snapshot that cannot be taken ends ``snapshot --wait`` with ``Snapshot Failed``; ``history``
shows an automatic, a CI and a manual promotion as three rows; the timeline marks what it should."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Cloud, run
from tests.e2e.test_local_cloud import settled
from tierlift.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
POLL = "0.5"
TIMELINE_LINE = re.compile(r"^ {0,6}\d+\.\d\ds  ")


def hint(cloud: Cloud) -> dict[str, str]:
    """What ``local serve``'s export line sets (a newcomer evals it)."""
    line = next(line for line in cloud.log.read_text().splitlines() if line.startswith("export "))
    return dict(item.split("=", 1) for item in line.removeprefix("export ").split())


def cli(cloud: Cloud, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "tierlift", *args], timeout=timeout, USER="newcomer", **hint(cloud))


def contract_example(tenant: str) -> str:
    """docs/contract.md's config example, for ``tenant``."""
    text = (REPO / "docs" / "contract.md").read_text()
    block = re.search(r"```json\n(.*?)```", text[text.index("## Tenant config") :], re.S)
    assert block is not None
    return block.group(1).replace("xy-0146", tenant)


def test_a_tenant_without_infrastructure_is_refused_then_its_snapshot_fails_with_the_reason(
    cloud: Cloud, tmp_path: Path
) -> None:
    tenant = "fh-0001"
    config = tmp_path / f"{tenant}.json"
    config.write_text(contract_example(tenant))
    refused = cli(cloud, "tenant", "register", str(config))
    assert refused.returncode == ExitCode.REFUSED, refused.stderr
    assert f"  dev: source DB instance {tenant}-dev (source.db_instance)" in refused.stderr.splitlines()
    assert "--no-check stores it anyway" in refused.stderr and "Traceback" not in refused.stderr
    assert cloud.param(f"/tierlift/{tenant}/config") is None

    registered = cli(cloud, "tenant", "register", str(config), "--no-check")
    assert registered.returncode == 0 and "without checking" in registered.stdout
    status = cli(cloud, "status", tenant)
    assert f"warning: {tenant}-dev: source DB instance {tenant}-dev does not exist" in status.stdout

    failed = cli(cloud, "snapshot", tenant, "--wait", "--poll", POLL, "--timeout", "30")
    assert failed.returncode == ExitCode.FAILED, failed.stdout + failed.stderr
    assert failed.stdout.splitlines()[-1] == (
        f"Snapshot Failed: the source DB instance {tenant}-dev does not exist: create it, or fix "
        "source.db_instance in the config and register it again (tierlift tenant register FILE)"
    )
    as_json = cli(cloud, "snapshot", tenant, "--wait", "--poll", POLL, "--timeout", "30", "--output", "json")
    data = json.loads(as_json.stdout)
    assert as_json.returncode == ExitCode.FAILED and data["outcome"] == "failed" and data["version"] is None
    assert data["snapshot"].startswith(f"{tenant}-dev-") and "does not exist" in data["reason"]


def put_request(cloud: Cloud, **detail: Any) -> None:
    cloud.put("Promotion Requested", **detail)


def history(cloud: Cloud, tenant: str) -> list[dict[str, Any]]:
    result = cli(cloud, "history", tenant, "--output", "json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_history_after_a_manual_an_automatic_and_a_ci_promotion_has_three_rows(cloud: Cloud) -> None:
    tenant = "fh-0002"
    assert cli(cloud, "local", "bootstrap", "--tenant", tenant, "--no-automatic").returncode == 0
    v1 = json.loads(cli(cloud, "snapshot", tenant, "--wait", "--poll", POLL, "--output", "json").stdout)["version"]
    manual = cli(cloud, "promote", tenant, "qa", "--wait", "--poll", POLL, "--timeout", "60")
    assert manual.returncode == 0, manual.stdout + manual.stderr
    # automatic promotion of qa on: the next snapshot is promoted to qa by itself
    booted = cli(cloud, "local", "bootstrap", "--tenant", tenant, "--output", "json")
    assert json.loads(booted.stdout)["automatic"] == ["qa"]
    v2 = json.loads(cli(cloud, "snapshot", tenant, "--wait", "--poll", POLL, "--output", "json").stdout)["version"]
    assert v2 > v1
    # active moves at the cutover: prod may be requested once qa's promotion has ended (no lock)
    cloud.wait(lambda: settled(cloud, tenant, "qa", v2), "the automatic promotion of qa")
    # a CI job sends its request twice (a retried step), with its run id as promotion_id: one request
    for _ in range(2):
        put_request(cloud, tenant=tenant, environment="prod", version=v2, requested_by="ci", promotion_id="ci-run-7")
    cloud.wait(lambda: cloud.active(tenant, "prod") == v2, "the CI promotion of prod")
    cloud.wait(lambda: all(r["outcome"] for r in history(cloud, tenant)), "every request answered")
    records = history(cloud, tenant)
    assert [(r["namespace"], r["version"], r["requested_by"], r["outcome"]) for r in records] == [
        (f"{tenant}-qa", v1, "newcomer (unsigned)", "completed"),  # a name sent on the bus: not proven
        (f"{tenant}-qa", v2, f"tierlift:snapshot/{tenant}-dev-{v2}", "completed"),
        (f"{tenant}-prod", v2, "ci (unsigned)", "completed"),
    ], json.dumps(records, indent=1)
    assert records[1]["id"] == f"{tenant}-dev-{v2}-qa" and records[2]["id"] == "ci-run-7"
    table = cli(cloud, "history", tenant).stdout.splitlines()
    assert len([line for line in table if not line.startswith(" ")]) == 3, table
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  ", line) for line in table if not line.startswith(" "))


def test_the_timeline_marks_unrouted_events_and_expected_ignores_and_fits_120_columns(cloud: Cloud) -> None:
    tenant = "fh-0003"
    assert cli(cloud, "local", "bootstrap", "--tenant", tenant, "--no-automatic").returncode == 0
    cloud.put("Promotion Requestd", tenant=tenant, environment="qa")  # a typo: nothing listens to it
    # someone's own backup of the dev DB: RDS announces it like any manual snapshot; not tierlift's
    cloud.session.client("rds").create_db_snapshot(
        DBSnapshotIdentifier="my-backup", DBInstanceIdentifier=f"{tenant}-dev"
    )
    log = lambda: cloud.log.read_text(errors="replace")  # noqa: E731
    cloud.wait(lambda: "'Promotion Requestd'" in log(), "the typo in the timeline")
    cloud.wait(lambda: "not a tierlift source snapshot: my-backup" in log(), "the backup's snapshot event")
    lines = log().splitlines()
    typo = next(i for i, line in enumerate(lines) if "tierlift: Promotion Requestd" in line)
    assert "no rule matched" in lines[typo]
    backup = next(i for i, line in enumerate(lines) if "not a tierlift source snapshot: my-backup" in line)
    assert "λ snapshot_created" in lines[backup - 1] and "ignore: expected" in lines[backup - 1]
    timeline = [line for line in lines if TIMELINE_LINE.match(line)]
    assert timeline and all(len(line) <= 120 for line in timeline)


def test_the_export_hint_is_complete_and_can_be_evald(cloud: Cloud) -> None:
    line = next(line for line in cloud.log.read_text().splitlines() if line.startswith("export "))
    shown = subprocess.run(
        ["bash", "-c", f"{line}\nenv"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=True
    ).stdout.splitlines()
    assert f"AWS_ENDPOINT_URL={cloud.endpoint}" in shown and "AWS_DEFAULT_REGION=us-east-1" in shown
    assert {"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "TIERLIFT_EVENT_BUS=tierlift-dev"} <= set(
        shown
    )
    aws = Path(sys.executable).parent / "aws"
    env = {k.split("=", 1)[0]: k.split("=", 1)[1] for k in shown if "=" in k}
    listed = subprocess.run([str(aws), "ssm", "describe-parameters"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr  # the first aws command works with nothing else set
