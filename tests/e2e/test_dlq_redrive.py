"""``tierlift dlq redrive`` against ``local serve``: the local cloud dead-letters as the template deploys.

A handler that fails Lambda's retries leaves Lambda's on-failure destination record in
``tierlift-dev-invocations-dlq``; the redrive command (the same one an operator runs against AWS)
re-invokes the function with the original event, and the pipeline carries on from there.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BUS, SPEED, Cloud, Outbox, run, start_serve, stop_serve
from tierlift.world import bootstrap_tenant

TENANT = "dl-0001"
DLQ = "tierlift-dev-invocations-dlq"


@pytest.fixture(scope="module")
def own_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A cloud of its own: the redrive empties every dead-letter queue, other tests' letters included."""
    log = tmp_path_factory.mktemp("dlq-cloud") / "serve.log"
    process, running = start_serve(log, "--speed", SPEED, "--no-schedules", env={"TIERLIFT_GRACE_SECONDS": "0"})
    try:
        yield running
    finally:
        stop_serve(process)


def parked(cloud: Cloud) -> list[dict[str, Any]]:
    url = cloud.sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
    messages = cloud.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def redrive(cloud: Cloud, *extra: str) -> str:
    result = run([sys.executable, "-m", "tierlift", "dlq", "redrive", "--endpoint-url", cloud.endpoint, *extra])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_dead_lettered_events_are_redriven_to_the_function_that_failed_them(own_cloud: Cloud, tmp_path: Path) -> None:
    cloud = own_cloud
    bootstrap_tenant(cloud.session, TENANT)
    outbox = Outbox(cloud, TENANT)
    rds = cloud.session.client("rds")
    version = "20261127200000"
    # 1. An AWS service's event (RDS-EVENT-0042) whose handler fails three times: put-events cannot
    #    send an aws.rds event back, so the redrive invokes snapshot_created with it.
    cloud.set_faults({"crash": [{"handler": "snapshot_created", "after_calls": 0, "times": 3}]})
    name = f"{TENANT}-dev-{version}"
    rds.create_db_snapshot(DBSnapshotIdentifier=name, DBInstanceIdentifier=f"{TENANT}-dev")
    letters = cloud.wait(lambda: [p for p in parked(cloud) if p["requestPayload"]["source"] == "aws.rds"], "RDS letter")
    assert letters[0]["requestContext"]["functionArn"].endswith(":function:tierlift-dev-snapshot_created:$LATEST")
    cloud.set_faults({})
    assert outbox.types() == []  # nothing promoted while the event sat in the queue
    dry = redrive(cloud, "--dry-run")
    assert "invoke tierlift-dev-snapshot_created (not done)" in dry, dry
    assert len(parked(cloud)) == 1
    assert "invoke tierlift-dev-snapshot_created" in redrive(cloud)
    cloud.wait(lambda: cloud.active(TENANT, "qa") == version, "the automatic promotion")
    assert parked(cloud) == []

    # 2. One of tierlift's own events: re-invoked unchanged, so the promotion keeps the request's id.
    cloud.set_faults({"crash": [{"handler": "promotion_requested", "after_calls": 0, "times": 3}]})
    put = cloud.events.put_events(
        Entries=[
            {
                "Source": "tierlift",
                "DetailType": "Promotion Requested",
                "Detail": json.dumps(
                    {"tenant": TENANT, "environment": "prod", "version": version, "requested_by": "e2e-redrive"}
                ),
                "EventBusName": BUS,
            }
        ]
    )
    request_id = put["Entries"][0]["EventId"]
    letters = cloud.wait(lambda: [p for p in parked(cloud) if p["requestPayload"]["id"] == request_id], "request")
    assert letters[0]["responsePayload"]["errorType"] == "InjectedCrash"
    cloud.set_faults({})
    assert "invoke tierlift-dev-promotion_requested" in redrive(cloud, "--queue", DLQ)
    cloud.wait(lambda: cloud.active(TENANT, "prod") == version, "the redriven promotion")
    started = [
        e for e in outbox.drain() if e["detail-type"] == "Promotion Started" and e["detail"]["environment"] == "prod"
    ]
    assert [e["detail"]["promotion_id"] for e in started] == [request_id]
    assert parked(cloud) == []
    assert "(no dead letters)" in redrive(cloud)
