"""The operator's commands end to end, as a newcomer runs them against ``local serve`` (a subprocess).

Every command is a subprocess of its own (``python -m tierlift …`` or the installed ``tierlift``), the
same as on an operator's machine; ``--wait`` follows the pipeline's events in the ledger that the local
cloud routes to CloudWatch Logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.e2e.conftest import Cloud, run
from tierlift.errors import ExitCode

UNHEALTHY = "public.ecr.aws/nginx/nginx:unhealthy"
POLL = "0.5"


def cli(cloud: Cloud, *args: str, timeout: float = 90, person: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as the local operator (the default credentials), or as ``person`` (a role session of theirs:
    a second person, for environments with the two-person rule)."""
    credentials: dict[str, str] = {}
    if person is not None:
        from tierlift.local.gateway import person as person_session

        frozen = person_session(cloud.session, person).get_credentials().get_frozen_credentials()  # type: ignore[union-attr]
        credentials = {
            "AWS_ACCESS_KEY_ID": frozen.access_key,
            "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
            "AWS_SESSION_TOKEN": frozen.token or "",
        }
    return run(
        [sys.executable, "-m", "tierlift", *args, "--endpoint-url", cloud.endpoint],
        timeout=timeout,
        USER="e2e-operator",
        **credentials,
    )


BOB = "arn:aws:sts::123456789012:assumed-role/tierlift-operators/bob"


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def world(cloud: Cloud, tenant: str, *, approval: bool = False) -> str:
    """A tenant (nothing automatic) and one dev snapshot; returns its version."""
    extra = ["--approval", "prod"] if approval else []
    ok(cli(cloud, "local", "bootstrap", "--tenant", tenant, "--no-automatic", *extra))
    return snapshot(cloud, tenant)


def snapshot(cloud: Cloud, tenant: str) -> str:
    out = ok(cli(cloud, "snapshot", tenant, "--wait", "--poll", POLL, "--timeout", "30", "--output", "json"))
    return str(json.loads(out)["version"])


def status_rows(cloud: Cloud) -> dict[str, dict[str, Any]]:
    rows = json.loads(ok(cli(cloud, "status", "--output", "json")))
    return {r["namespace"]: r for r in rows}


def history(cloud: Cloud, tenant: str, *env: str) -> list[dict[str, Any]]:
    return list(json.loads(ok(cli(cloud, "history", tenant, *env, "--output", "json"))))


def promote_wait(cloud: Cloud, tenant: str, env: str, *args: str, code: int = 0) -> str:
    return ok(cli(cloud, "promote", tenant, env, "--wait", "--poll", POLL, "--timeout", "60", *args), code)


def test_promote_wait_on_a_completed_promotion_then_status_and_history(cloud: Cloud) -> None:
    tenant = "ba-0001"
    version = world(cloud, tenant)
    out = promote_wait(cloud, tenant, "qa")
    lines = out.splitlines()
    assert lines[0].startswith(f"Promotion Requested for {tenant}-qa: ")
    promotion_id = lines[0].rsplit(" ", 1)[1]
    stages = [line.split()[1] for line in lines[2:-1]]
    assert stages == ["requested", "restoring", "database", "deploying", "completed"], out
    assert "by e2e-operator" in lines[2] and f"version {version}" in lines[3]
    assert lines[-1].startswith("completed in ") and lines[-1].endswith(f"{tenant}-qa runs {version}")

    row = status_rows(cloud)[f"{tenant}-qa"]
    assert row["active"] == version and row["stage"] is None and row["queued"] == []
    assert row["snapshot"] == f"{tenant}-dev-{version}" and row["endpoint"]
    service = cloud.session.client("ecs").describe_services(cluster="common-nonprod", services=[f"{tenant}-qa"])
    running = service["services"][0]["taskDefinition"]  # the revision the promotion registered
    assert running.endswith(f"/{row['task_definition']}") and row["task_definition"].startswith(f"{tenant}-qa:")
    assert row["last"]["outcome"] == "completed" and row["last"]["promotion_id"] == promotion_id
    table = ok(cli(cloud, "status", "--all"))
    assert any(line.startswith(f"{tenant}-qa ") and version in line for line in table.splitlines())
    one = {r["environment"]: r for r in json.loads(ok(cli(cloud, "status", tenant, "--output", "json")))}
    assert one["qa"]["endpoint"] == row["endpoint"] and one["qa"]["stack_status"] == "CREATE_COMPLETE"
    assert one["qa"]["last"]["outcome"] == "completed" and one["dev"]["source"] is True
    assert one["dev"]["active"] is None and one["dev"]["missing"] == [] and one["qa"]["missing"] == []

    records = history(cloud, tenant, "qa")
    record = next((r for r in records if r["id"] == promotion_id), None)
    assert record is not None, records
    assert record["id"] == promotion_id and record["requested_by"] == "e2e-operator (unsigned)"
    assert record["outcome"] == "completed" and record["version"] == version
    assert [s["stage"] for s in record["stages"]] == ["restoring", "database_ready", "deploying", "completed"]


def test_promote_wait_on_a_rolled_back_promotion(cloud: Cloud) -> None:
    tenant = "bb-0001"
    world(cloud, tenant)
    out = promote_wait(cloud, tenant, "qa", "--image", UNHEALTHY, code=ExitCode.ROLLED_BACK)
    assert out.splitlines()[-1] == "rolled back in " + out.splitlines()[-1].split("rolled back in ")[1]
    assert "circuit breaker" in out.splitlines()[-1]
    (record,) = history(cloud, tenant)
    assert record["outcome"] == "rolled_back" and "circuit breaker" in record["reason"]
    assert record["image"] == UNHEALTHY


def test_rollback_wait_to_the_previous_version_and_refused_when_its_snapshot_is_gone(cloud: Cloud) -> None:
    tenant = "bc-0001"
    v1 = world(cloud, tenant)
    promote_wait(cloud, tenant, "qa", "--version", v1)
    v2 = snapshot(cloud, tenant)
    assert v2 > v1
    promote_wait(cloud, tenant, "qa", "--version", v2)
    out = ok(cli(cloud, "rollback", tenant, "qa", "--wait", "--poll", POLL, "--timeout", "60"))
    assert f"(roll back {v2} -> {v1})" in out.splitlines()[0]
    assert out.splitlines()[-1].endswith(f"{tenant}-qa runs {v1}")
    assert status_rows(cloud)[f"{tenant}-qa"]["active"] == v1
    # The version before v1 is v2 now; once its source snapshot is gone, rolling back is refused.
    cloud.session.client("rds").delete_db_snapshot(DBSnapshotIdentifier=f"{tenant}-dev-{v2}")
    refused = cli(cloud, "rollback", tenant, "qa")
    assert refused.returncode == ExitCode.REFUSED
    assert f"its source snapshot {tenant}-dev-{v2} is gone" in refused.stderr
    records = history(cloud, tenant, "qa")
    assert [r["outcome"] for r in records] == ["completed", "completed", "completed"]
    assert [r["rollback"] for r in records] == [False, False, True] and records[-1]["previous"] == v2


def test_wrong_tenant_unknown_environment_nothing_to_approve(cloud: Cloud) -> None:
    tenant = "bd-0001"
    ok(cli(cloud, "local", "bootstrap", "--tenant", tenant, "--no-automatic"))
    for args, code, says in [
        (("promote", "zz-9999", "qa"), ExitCode.NOT_FOUND, "unknown tenant zz-9999"),
        (("status", "zz-9999"), ExitCode.NOT_FOUND, "unknown tenant zz-9999"),
        (("history", "zz-9999"), ExitCode.NOT_FOUND, "unknown tenant zz-9999"),
        (("promote", tenant, "staging"), ExitCode.NOT_FOUND, "environment staging"),
        (("promote", tenant, "dev"), ExitCode.NOT_FOUND, "source environment"),
        (("approve", tenant, "prod"), ExitCode.REFUSED, "does not require approval"),
        (("cancel", tenant, "prod"), ExitCode.REFUSED, "nothing to cancel"),
        (("rollback", tenant, "prod"), ExitCode.REFUSED, "nothing is active"),
    ]:
        result = cli(cloud, *args)
        assert result.returncode == code, (args, result.stderr)
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def approval_world(cloud: Cloud, tenant: str) -> tuple[str, str]:
    """qa promoted (--wait), then prod requested and awaiting approval; returns (version, promotion id)."""
    version = world(cloud, tenant, approval=True)
    promote_wait(cloud, tenant, "qa")
    sent = ok(cli(cloud, "promote", tenant, "prod"))
    promotion_id = sent.split()[-1]
    cloud.wait(lambda: status_rows(cloud)[f"{tenant}-prod"]["stage"] == "awaiting_approval", "prod awaiting approval")
    table = ok(cli(cloud, "status"))
    assert any(line.startswith(f"{tenant}-prod ") and "awaiting_approval" in line for line in table.splitlines())
    return version, promotion_id


def test_approve_wait_on_an_approved_promotion(cloud: Cloud) -> None:
    tenant = "be-0001"
    version, promotion_id = approval_world(cloud, tenant)
    own = cli(cloud, "approve", tenant, "prod")  # who requested it may not approve it (two-person rule)
    assert own.returncode == ExitCode.REFUSED and "two-person rule" in own.stderr, own.stderr
    out = ok(cli(cloud, "approve", tenant, "prod", "--wait", "--poll", POLL, "--timeout", "60", person="bob"))
    assert promotion_id in out.splitlines()[0]
    assert "awaiting approval" in out and "approved" in out
    assert out.splitlines()[-1].endswith(f"{tenant}-prod runs {version}")
    record = history(cloud, tenant, "prod")[-1]
    assert record["outcome"] == "completed"
    approved = next(s for s in record["stages"] if s["stage"] == "approved")
    assert approved["by"] == BOB  # the signer, as AWS established it


def test_cancel_wait_on_a_cancelled_promotion(cloud: Cloud) -> None:
    tenant = "bf-0001"
    _, promotion_id = approval_world(cloud, tenant)
    out = cli(cloud, "cancel", tenant, "prod", "--reason", "wrong window", "--wait", "--poll", POLL, "--timeout", "60")
    text = ok(out, ExitCode.CANCELLED)
    assert promotion_id in text.splitlines()[0] and text.splitlines()[-1].startswith("cancelled")
    row = status_rows(cloud)[f"{tenant}-prod"]
    assert row["stage"] is None and row["active"] is None and row["last"]["outcome"] == "cancelled"
    record = history(cloud, tenant, "prod")[-1]
    assert record["outcome"] == "cancelled"
