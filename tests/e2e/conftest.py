"""End-to-end fixtures: ``python -m tierlift local serve`` in a subprocess, driven over loopback.

The server never runs in the pytest process (other tests use moto's ``mock_aws`` here). Every wait
is bounded; the cloud runs at a high ``--speed`` so AWS's minutes take milliseconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from tierlift.buses import DEFAULT_BUS, listens_on_own_bus
from tierlift.buses import LOCAL_BUS as BUS

REPO = Path(__file__).resolve().parents[2]
SPEED = "3000"
WAIT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERLIFT_", "MOTO_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    env.update(extra)
    return env


def run(args: list[str], *, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command from the repo root with a clean AWS environment; output captured, never raises."""
    return subprocess.run(
        args, cwd=REPO, env=clean_env(**env), capture_output=True, text=True, timeout=timeout, check=False
    )


class EndpointSession(boto3.session.Session):
    """A boto3 session whose clients all talk to the local cloud (the central account's default credentials
    unless ``credentials`` are given: another account's, :meth:`Cloud.in_account`)."""

    def __init__(self, endpoint: str, **credentials: str) -> None:
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"} | credentials
        super().__init__(region_name="us-east-1", **credentials)
        self.endpoint = endpoint

    def client(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("endpoint_url", self.endpoint)
        kwargs.setdefault("config", Config(retries={"mode": "standard", "max_attempts": 5}))
        return super().client(*args, **kwargs)


class Cloud:
    """The running ``local serve`` process and helpers to drive and observe it."""

    def __init__(self, endpoint: str, log: Path) -> None:
        self.endpoint = endpoint
        self.log = log
        self.session = EndpointSession(endpoint)
        self.ssm = self.session.client("ssm")
        self.events = self.session.client("events")
        self.sqs = self.session.client("sqs")

    def in_account(self, account: str) -> EndpointSession:
        """A session of another account of the local cloud (moto keeps each account's state): a cell's."""
        from tierlift.world import account_credentials

        return EndpointSession(self.endpoint, **account_credentials(self.session, account))

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- serve log ---\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def param(self, name: str) -> str | None:
        try:
            return str(self.ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except ClientError:
            return None

    def active(self, tenant: str, environment: str) -> str | None:
        """The environment's active version, as the pipeline's own state store reads it."""
        from chalicelib.adapters.ssm import SsmStateStore
        from chalicelib.domain.names import Tenant

        version = SsmStateStore(self.ssm).get_active(Tenant.parse(tenant).namespace(environment))
        return version.value if version else None

    def put(self, detail_type: str, **detail: Any) -> None:
        response = self.events.put_events(
            Entries=[
                {"Source": "tierlift", "DetailType": detail_type, "Detail": json.dumps(detail), "EventBusName": BUS}
            ]
        )
        assert response["FailedEntryCount"] == 0, response

    def set_faults(self, faults: dict[str, Any]) -> None:
        self.ssm.put_parameter(Name="/tierlift-local/faults", Value=json.dumps(faults), Type="String", Overwrite=True)
        time.sleep(0.6)  # the cloud rereads the parameter every 0.25 s


class Outbox:
    """tierlift's events for one tenant, through a rule of our own on the local cloud's bus."""

    def __init__(self, cloud: Cloud, tenant: str, pattern: dict[str, Any] | None = None, suffix: str = "") -> None:
        name = f"e2e-outbox-{tenant}{suffix}"
        self.sqs = cloud.sqs
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        pattern = pattern or {"source": ["tierlift"], "detail": {"tenant": [tenant]}}
        # on the bus the pipeline's own rules for such events sit on (tierlift's, or the default for aws.*)
        bus = BUS if listens_on_own_bus(pattern) else DEFAULT_BUS
        cloud.events.put_rule(Name=name, EventPattern=json.dumps(pattern), EventBusName=bus)
        cloud.events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "outbox", "Arn": arn}])
        self.seen: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return self.seen
            for message in messages:
                self.seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def types(self, environment: str | None = None) -> list[str]:
        return [
            e["detail-type"]
            for e in self.drain()
            if environment is None or e["detail"].get("environment") == environment
        ]

    def first(self, detail_type: str, environment: str) -> dict[str, Any] | None:
        return next(
            (
                e
                for e in self.drain()
                if e["detail-type"] == detail_type and e["detail"].get("environment") == environment
            ),
            None,
        )


def start_serve(log: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Cloud]:
    """``python -m tierlift local serve`` on a free port, its output in ``log``; returns once it routes."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tierlift",
                "local",
                "serve",
                "--port",
                str(port),
                "--handler-log",
                str(log.with_suffix(".handlers.log")),
                *extra,
            ],
            cwd=REPO,
            env=clean_env(**(env or {})),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Cloud(f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"local serve exited with {process.returncode}:\n{running.tail()}")
            try:
                rules = running.events.list_rules(NamePrefix="tierlift-local-")["Rules"]
                routed = any(r["Name"] == "tierlift-local-deployment_state" for r in rules)
                # and its banner is out: the rules exist before serve prints the export line
                if routed and "\nexport " in log.read_text(errors="replace"):
                    return process, running
            except (EndpointConnectionError, ClientError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"local serve did not come up:\n{running.tail()}")
            time.sleep(0.1)
    except BaseException:
        stop_serve(process)
        raise


def stop_serve(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """The shared local cloud: fast, schedules only on demand, no grace period for the sweep.

    Every e2e test adds tenants to it and some leave their DBs running, so it is given room for the
    whole session (RDS's default of 40 DB instances is reached after about a hundred tests); the quota
    itself is tested on a cloud of its own (test_concurrency)."""
    log = tmp_path_factory.mktemp("local-cloud") / "serve.log"
    process, running = start_serve(
        log, "--speed", SPEED, "--no-schedules", "--db-instance-quota", "1000", env={"TIERLIFT_GRACE_SECONDS": "0"}
    )
    try:
        yield running
    finally:
        stop_serve(process)
