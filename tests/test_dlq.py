"""``tierlift dlq redrive`` against moto: both kinds of dead letter the packaged template produces."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tierlift import dlq

REGION = "us-east-1"
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:tierlift-dev-SnapshotCreated"


def _event(source: str, detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "e-1",
        "source": source,
        "detail-type": detail_type,
        "account": "123456789012",
        "time": "2026-11-28T07:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": detail,
    }


class FakeLambda:
    def __init__(self) -> None:
        self.invoked: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.invoked.append(kwargs)
        return {"StatusCode": 202}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        events = boto3.client("events", region_name=REGION)
        rules = sqs.create_queue(QueueName="tierlift-dev-rules-dlq")["QueueUrl"]
        invocations = sqs.create_queue(QueueName="tierlift-dev-invocations-dlq")["QueueUrl"]
        sink = sqs.create_queue(QueueName="sink")["QueueUrl"]
        sink_arn = sqs.get_queue_attributes(QueueUrl=sink, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="all-tierlift", EventPattern=json.dumps({"source": ["tierlift"]}))
        events.put_targets(Rule="all-tierlift", Targets=[{"Id": "sink", "Arn": sink_arn}])
        # An EventBridge dead letter: the original event, with the rule and target as attributes.
        requested = _event("tierlift", "Promotion Requested", {"tenant": "xy-0146", "environment": "prod"})
        sqs.send_message(
            QueueUrl=rules,
            MessageBody=json.dumps(requested),
            MessageAttributes={
                "RULE_ARN": {"DataType": "String", "StringValue": "arn:aws:events:us-east-1:123456789012:rule/r"},
                "TARGET_ARN": {"DataType": "String", "StringValue": FUNCTION.replace("SnapshotCreated", "Req")},
                "ERROR_CODE": {"DataType": "String", "StringValue": "SDK_CLIENT_ERROR"},
            },
        )
        # Lambda on-failure destination records: one of tierlift's events, one of RDS's.
        approved = _event("tierlift", "Promotion Approved", {"tenant": "xy-0146", "command": "approve"})
        rds = _event("aws.rds", "RDS DB Snapshot Event", {"EventID": "RDS-EVENT-0042", "SourceType": "SNAPSHOT"})
        for payload in (approved, rds):
            sqs.send_message(
                QueueUrl=invocations,
                MessageBody=json.dumps(
                    {
                        "version": "1.0",
                        "requestContext": {"functionArn": FUNCTION + ":$LATEST", "condition": "RetriesExhausted"},
                        "requestPayload": payload,
                        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
                    }
                ),
            )
        sqs.send_message(QueueUrl=invocations, MessageBody="not json")
        yield {"sqs": sqs, "events": events, "sink": sink, "rules": rules, "invocations": invocations}


def _count(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _sink(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        out.extend(json.loads(m["Body"]) for m in batch)
    return out


def test_dry_run_reports_and_changes_nothing(aws: Any) -> None:
    fake = FakeLambda()
    report = dlq.redrive(aws["sqs"], aws["events"], fake, dry_run=True)
    assert sorted((r["kind"], r["action"]) for r in report) == [
        ("invocation", "invoke"),
        ("invocation", "put-events"),
        ("rule", "put-events"),
        ("unknown", "skip: not an event"),
    ]
    assert not any(r["done"] for r in report)
    assert fake.invoked == [] and _sink(aws["sqs"], aws["sink"]) == []
    assert _count(aws["sqs"], aws["rules"]) == 1 and _count(aws["sqs"], aws["invocations"]) == 3
    # still visible: a real redrive right after sees them all
    assert len(dlq.redrive(aws["sqs"], aws["events"], fake, dry_run=True)) == 4


def test_redrive_puts_tierlift_events_back_and_reinvokes_aws_events(aws: Any) -> None:
    fake = FakeLambda()
    report = dlq.redrive(aws["sqs"], aws["events"], fake)
    assert sum(r["done"] for r in report) == 3
    delivered = _sink(aws["sqs"], aws["sink"])
    assert sorted(e["detail-type"] for e in delivered) == ["Promotion Approved", "Promotion Requested"]
    assert {e["detail"]["tenant"] for e in delivered} == {"xy-0146"}
    assert [json.loads(i["Payload"])["source"] for i in fake.invoked] == ["aws.rds"]
    assert fake.invoked[0]["FunctionName"] == FUNCTION and fake.invoked[0]["InvocationType"] == "Event"
    # re-driven messages are gone; the unreadable one stays for a human
    assert _count(aws["sqs"], aws["rules"]) == 0
    assert _count(aws["sqs"], aws["invocations"]) == 1


def test_one_queue_by_name(aws: Any) -> None:
    report = dlq.redrive(aws["sqs"], aws["events"], FakeLambda(), queue="tierlift-dev-rules-dlq")
    assert [r["queue"] for r in report] == ["tierlift-dev-rules-dlq"]
