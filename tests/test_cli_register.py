"""``tenant register`` checks what the config names and refuses with the list of what is missing;
``--no-check`` stores it anyway and ``status TENANT`` then warns (issue 20, item 1). On moto, in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tierlift import cli
from tierlift.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]


def contract_example() -> dict[str, Any]:
    """The config example of docs/contract.md, as a newcomer copies it."""
    text = (REPO / "docs" / "contract.md").read_text()
    section = text[text.index("## Tenant config") :]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    return dict(json.loads(block.group(1)))


def write(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / f"{config['tenant']}.json"
    path.write_text(json.dumps(config))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_contract_example_without_infrastructure_is_refused_with_what_is_missing(
    aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "tenant", "register", write(tmp_path, contract_example()))
    assert code == ExitCode.REFUSED and out == ""
    assert err.startswith("tierlift: not registering xy-0146: 7 thing(s) its config names do not exist:\n")
    for line in [
        "  dev: source DB instance xy-0146-dev (source.db_instance)",
        "  qa: ECS cluster common-nonprod (targets.qa.cluster)",
        "  qa: DB subnet group common-nonprod-db (targets.qa.db.subnet_group)",
        "  qa: security group sg-0123456789abcdef0 (targets.qa.db.security_groups)",
        "  prod: ECS cluster common-prod (targets.prod.cluster)",
        "  prod: DB subnet group common-prod-db (targets.prod.db.subnet_group)",
        "  prod: security group sg-0fedcba9876543210 (targets.prod.db.security_groups)",
        "tierlift tenant register FILE --no-check stores it anyway (tierlift status TENANT then warns)",
    ]:
        assert line in err.splitlines(), err
    assert "Traceback" not in err
    # Nothing was stored.
    assert aws.client("ssm").describe_parameters()["Parameters"] == []


def test_no_check_registers_ahead_of_the_infrastructure_and_status_warns(
    aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "tenant", "register", write(tmp_path, contract_example()), "--no-check")
    assert code == 0 and out.startswith("registered /tierlift/xy-0146/config without checking")
    code, out, err = run(capsys, "status", "xy-0146")
    assert code == 0, err
    assert "warning: xy-0146-dev: source DB instance xy-0146-dev does not exist" in out.splitlines()
    assert "warning: xy-0146-qa: ECS cluster common-nonprod does not exist" in out.splitlines()
    code, out, _ = run(capsys, "status", "xy-0146", "--output", "json")
    rows = {r["environment"]: r for r in json.loads(out)}
    assert rows["dev"]["missing"] == ["source DB instance xy-0146-dev"] and rows["dev"]["source"] is True
    assert "ECS cluster common-prod" in rows["prod"]["missing"]
    # JSON holds nulls, never the table's "-" or "(source)".
    assert rows["dev"]["active"] is None and rows["qa"]["stack_status"] is None
    assert "-" not in {v for r in rows.values() for v in r.values() if isinstance(v, str)}
    assert "(source)" not in out


def test_a_bootstrapped_world_registers(
    world: Any, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "tenant", "register", write(tmp_path, world))
    assert (code, out.strip()) == (0, "registered /tierlift/xy-0146/config"), err
    code, out, _ = run(capsys, "status", "xy-0146")
    assert code == 0 and "warning" not in out


def test_a_container_the_service_does_not_run_and_a_service_it_cannot_create(
    world: Any, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = json.loads(json.dumps(world))
    config["targets"]["qa"]["container"] = "web"
    config["targets"]["prod"]["service"] = "xy-0146-nothing"
    del config["targets"]["prod"]["task"]["image"]
    code, _, err = run(capsys, "tenant", "register", write(tmp_path, config))
    assert code == ExitCode.REFUSED
    assert re.search(
        r"qa: container web in the task definition xy-0146-qa:\d+ of service xy-0146-qa \(it has: app\)", err
    )
    assert "prod: ECS service xy-0146-nothing in cluster common-prod (or give targets.prod.task.image" in err
    # A missing service the first promotion can create (image and subnets given) is not missing.
    config["targets"]["prod"]["task"]["image"] = "public.ecr.aws/nginx/nginx:1.27"
    config["targets"]["qa"]["container"] = "app"
    code, _, err = run(capsys, "tenant", "register", write(tmp_path, config))
    assert code == 0, err


def test_an_unreadable_config_changes_nothing(aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = contract_example()
    del bad["source"]["db_instance"]
    code, _, err = run(capsys, "tenant", "register", write(tmp_path, bad))
    assert code == ExitCode.USAGE and "config.source.db_instance is missing" in err
    assert aws.client("ssm").describe_parameters()["Parameters"] == []
