"""docs/deploy.md, followed as written: its ``bash`` code blocks, in order, in one shell, against a fresh
``local serve``, from an empty account to a completed qa and prod promotion, with ``tierlift doctor``
after every step (green before the first promotion); then doctor red, naming the endpoint removed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cloud, clean_env, start_serve, stop_serve

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "deploy.md"
BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M)
MARK = "=== guide block"


def blocks() -> list[str]:
    return BLOCK.findall(GUIDE.read_text())


def test_the_guide_has_its_steps_in_order_each_ending_with_doctor() -> None:
    found = blocks()
    assert len(found) == 8
    steps = [s for s in re.findall(r"^## (\d)\. ", GUIDE.read_text(), re.M)]
    assert steps == [str(n) for n in range(8)]
    for block in found:
        assert "tierlift doctor --stage" in block.strip().splitlines()[-1]
    assert "8.0." not in "".join(found)  # the engine version comes from DescribeDBEngineVersions
    assert "public.ecr.aws" not in GUIDE.read_text()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    process, running = start_serve(tmp_path / "serve.log", "--speed", "3000")
    try:
        yield running
    finally:
        stop_serve(process)


def shell(cloud: Cloud, script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = clean_env(AWS_ENDPOINT_URL=cloud.endpoint)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_following_the_guide_promotes_qa_and_prod_on_a_fresh_local_cloud(cloud: Cloud) -> None:
    script = "\n".join(f"echo '{MARK} {n}'\n{block}" for n, block in enumerate(blocks()))
    done = shell(cloud, script)
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-4000:]}\n{cloud.tail()}"
    outputs = done.stdout.split(MARK)[1:]
    assert len(outputs) == 8
    # step 0: an empty account, everything missing; step 1: the stacks and subnets ok
    assert "missing  stack common-nonprod" in outputs[0] and "missing  config xy-0146" in outputs[0]
    assert "ok       stack common-prod" in outputs[1] and "VPC endpoints missing" not in outputs[1]
    assert "ok       bus tierlift-dev" in outputs[2] and "ok       alarm topic tierlift-dev-alarms" in outputs[2]
    assert "ok       encryption xy-0146-dev" in outputs[6] and "ok       engine mysql 8.0." in outputs[6]
    # step 6: green before the first promotion; step 7: the promotions completed and doctor still green
    assert outputs[6].rstrip().endswith("all ok") and "missing" not in outputs[6]
    assert outputs[7].rstrip().endswith("all ok")
    qa, prod = cloud.active("xy-0146", "qa"), cloud.active("xy-0146", "prod")
    assert qa is not None and qa == prod

    # red: the endpoint removed from common-prod's VPC is named
    ec2 = cloud.session.client("ec2")
    vpc = next(
        o["OutputValue"]
        for o in cloud.session.client("cloudformation").describe_stacks(StackName="common-prod")["Stacks"][0]["Outputs"]
        if o["OutputKey"] == "VpcId"
    )
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
    ec2.delete_vpc_endpoints(
        VpcEndpointIds=[e["VpcEndpointId"] for e in endpoints if e["ServiceName"].endswith(".ecr.dkr")]
    )
    red = shell(cloud, "python -m tierlift doctor --stage dev --tenant xy-0146")
    if os.environ.get("TIERLIFT_GUIDE_LOG"):  # to read what the guide printed
        Path(os.environ["TIERLIFT_GUIDE_LOG"]).write_text(done.stdout + MARK + " red\n" + red.stdout)
    assert red.returncode == 1, red.stdout
    missing = [line for line in red.stdout.splitlines() if line.startswith("missing")]
    assert len(missing) == 2 and all("VPC endpoints missing: ecr.dkr (interface) (common-prod)" in m for m in missing)
