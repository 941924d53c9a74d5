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


LEDGER = "/aws/events/tierlift-dev-ledger"


class FailingLambda(FakeLambda):
    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}}, "Invoke")


def _rule_letter(sqs: Any, url: str, event: dict[str, Any], target: str | None) -> None:
    attributes = {
        "RULE_ARN": {"DataType": "String", "StringValue": "arn:aws:events:us-east-1:123456789012:rule/r"},
        "ERROR_CODE": {"DataType": "String", "StringValue": "SDK_CLIENT_ERROR"},
    }
    if target:
        attributes["TARGET_ARN"] = {"DataType": "String", "StringValue": target}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event), MessageAttributes=attributes)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        events = boto3.client("events", region_name=REGION)
        logs = boto3.client("logs", region_name=REGION)
        logs.create_log_group(logGroupName=LEDGER)
        rules = sqs.create_queue(QueueName="tierlift-dev-rules-dlq")["QueueUrl"]
        invocations = sqs.create_queue(QueueName="tierlift-dev-invocations-dlq")["QueueUrl"]
        sink = sqs.create_queue(QueueName="sink")["QueueUrl"]
        sink_arn = sqs.get_queue_attributes(QueueUrl=sink, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="all-tierlift", EventPattern=json.dumps({"source": ["tierlift"]}))
        events.put_targets(Rule="all-tierlift", Targets=[{"Id": "sink", "Arn": sink_arn}])
        # EventBridge dead letters: the original event, with the rule and target as attributes. One whose
        # target is a function, one whose target is the ledger's log group, one without a target.
        requested = _event("tierlift", "Promotion Requested", {"tenant": "xy-0146", "environment": "prod"})
        _rule_letter(sqs, rules, requested, FUNCTION.replace("SnapshotCreated", "Req"))
        completed = _event("tierlift", "Promotion Completed", {"tenant": "xy-0146", "environment": "qa"})
        _rule_letter(sqs, rules, completed, f"arn:aws:logs:us-east-1:123456789012:log-group:{LEDGER}:*")
        started = _event("tierlift", "Promotion Started", {"tenant": "xy-0146", "environment": "qa"})
        _rule_letter(sqs, rules, started, None)
        # Lambda on-failure destination records: one of tierlift's events, one of RDS's.
        approved = _event("tierlift", "Promotion Approved", {"tenant": "xy-0146", "command": "approve"})
        rds = _event("aws.rds", "RDS DB Snapshot Event", {"EventID": "RDS-EVENT-0042", "SourceType": "SNAPSHOT"})
        for payload in (approved, rds):
            sqs.send_message(
                QueueUrl=invocations,
                MessageBody=json.dumps(
                    {
                        "version": "1.0",
                        "requestContext": {
                            "functionArn": FUNCTION + ":$LATEST",
                            "condition": "RetriesExhausted",
                            "approximateInvokeCount": 3,
                        },
                        "requestPayload": payload,
                        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
                        "responsePayload": {"errorType": "ClientError", "errorMessage": "Throttling"},
                    }
                ),
            )
        sqs.send_message(QueueUrl=invocations, MessageBody="not json")
        yield {
            "sqs": sqs,
            "events": events,
            "logs": logs,
            "sink": sink,
            "rules": rules,
            "invocations": invocations,
        }


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


def _redrive(aws: Any, lambda_client: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return dlq.redrive(aws["sqs"], aws["events"], lambda_client, logs=aws["logs"], **kwargs)


def test_dry_run_reports_and_changes_nothing(aws: Any) -> None:
    fake = FakeLambda()
    report = _redrive(aws, fake, dry_run=True)
    assert sorted((r["kind"], r["detail_type"], r["action"]) for r in report) == [
        ("invocation", "Promotion Approved", "invoke"),
        ("invocation", "RDS DB Snapshot Event", "invoke"),
        ("rule", "Promotion Completed", "write-log"),
        ("rule", "Promotion Requested", "invoke"),
        ("rule", "Promotion Started", "put-events"),
        ("unknown", None, "skip: not an event"),
    ]
    errors = {r["detail_type"]: r["error"] for r in report}
    assert errors["RDS DB Snapshot Event"] == "ClientError: Throttling"
    assert errors["Promotion Requested"] == "SDK_CLIENT_ERROR"
    assert not any(r["done"] for r in report)
    assert fake.invoked == [] and _sink(aws["sqs"], aws["sink"]) == []
    assert _count(aws["sqs"], aws["rules"]) == 3 and _count(aws["sqs"], aws["invocations"]) == 3
    # still visible: a real redrive right after sees them all
    assert len(_redrive(aws, fake, dry_run=True)) == 6


def test_redrive_sends_each_event_back_to_the_target_that_failed_it(aws: Any) -> None:
    fake = FakeLambda()
    report = _redrive(aws, fake)
    assert sum(r["done"] for r in report) == 5
    # Functions are invoked with the original event, unchanged: same id (a re-delivery, not a new request).
    invoked = {json.loads(i["Payload"])["detail-type"]: i for i in fake.invoked}
    assert sorted(invoked) == ["Promotion Approved", "Promotion Requested", "RDS DB Snapshot Event"]
    assert {json.loads(i["Payload"])["id"] for i in fake.invoked} == {"e-1"}
    assert invoked["RDS DB Snapshot Event"]["FunctionName"] == FUNCTION  # the qualifier dropped
    assert invoked["Promotion Requested"]["FunctionName"] == FUNCTION.replace("SnapshotCreated", "Req")
    assert all(i["InvocationType"] == "Event" for i in fake.invoked)
    # The ledger's event is written into its log group, as EventBridge writes it.
    messages = [e["message"] for e in aws["logs"].filter_log_events(logGroupName=LEDGER)["events"]]
    assert [json.loads(m)["detail-type"] for m in messages] == ["Promotion Completed"]
    # Only the tierlift event without a known target goes back on the bus.
    assert [e["detail-type"] for e in _sink(aws["sqs"], aws["sink"])] == ["Promotion Started"]
    # re-driven messages are gone; the unreadable one stays for a human
    assert _count(aws["sqs"], aws["rules"]) == 0
    assert _count(aws["sqs"], aws["invocations"]) == 1


def test_a_failed_redrive_keeps_the_message(aws: Any) -> None:
    report = _redrive(aws, FailingLambda(), queue="tierlift-dev-invocations-dlq")
    failed = [r for r in report if r.get("failed")]
    assert len(failed) == 2 and all("TooManyRequestsException" in r["failed"] for r in failed)
    assert _count(aws["sqs"], aws["invocations"]) == 3
    assert "FAILED" in dlq.table(report)
    # visible again at once: the next run retries them
    assert len(_redrive(aws, FakeLambda(), queue="tierlift-dev-invocations-dlq", dry_run=True)) == 3


def test_one_queue_by_name(aws: Any) -> None:
    report = _redrive(aws, FakeLambda(), queue="tierlift-dev-rules-dlq")
    assert {r["queue"] for r in report} == {"tierlift-dev-rules-dlq"}


def test_queue_names_are_the_templates() -> None:
    from tierlift import package

    resources = package.merge_template("dev")["Resources"]
    names = {r["Properties"]["QueueName"] for r in resources.values() if r.get("Type") == "AWS::SQS::Queue"}
    assert names == {package.rules_dlq_name("dev"), package.invocations_dlq_name("dev")}
    assert all(n.startswith(dlq.DLQ_PREFIX) and n.endswith(dlq.DLQ_SUFFIX) for n in names)


def test_the_local_cloud_dead_letters_under_the_templates_names() -> None:
    from tierlift.local import cloud
    from tierlift.package import invocations_dlq_name, rules_dlq_name

    assert invocations_dlq_name("dev") == cloud.DLQ
    assert rules_dlq_name("dev") == cloud.RULES_DLQ


def test_old_requests_and_commands_stay_unless_the_ledger_shows_they_never_ended(aws: Any) -> None:
    """Past the ended-request retention the pipeline would run or answer a re-delivered request again."""
    from datetime import UTC, datetime

    an_hour_later = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)  # the events are from 07:00
    fake = FakeLambda()
    report = _redrive(aws, fake, max_age=1800, now=an_hour_later, dry_run=True)
    actions = {r["detail_type"]: r["action"] for r in report}
    # tierlift's own requests and commands: too old (no ledger was named to check the request in)
    assert actions["Promotion Requested"] == "skip: older than 1800 s (the pipeline no longer recognises it)"
    assert actions["Promotion Approved"].startswith("skip: older than 1800 s")
    assert actions["Promotion Started"].startswith("skip: older than 1800 s")
    # AWS events go back at any age (their handlers ignore what is stale); the ledger's copy is a record
    assert actions["RDS DB Snapshot Event"] == "invoke" and actions["Promotion Completed"] == "write-log"

    # With the ledger: the request never ended, so nothing about it was forgotten: it goes back.
    report = _redrive(aws, fake, max_age=1800, now=an_hour_later, ledger=LEDGER, dry_run=True)
    assert {r["detail_type"]: r["action"] for r in report}["Promotion Requested"] == "invoke"

    # Once the ledger holds its terminal event, it stays: answered already.
    rejected = _event("tierlift", "Promotion Rejected", {"tenant": "xy-0146", "environment": "prod"})
    rejected["detail"]["promotion_id"] = "e-1"
    aws["logs"].create_log_stream(logGroupName=LEDGER, logStreamName="s")
    aws["logs"].put_log_events(
        logGroupName=LEDGER,
        logStreamName="s",
        logEvents=[
            {
                "timestamp": int(datetime(2026, 11, 28, 7, 1, tzinfo=UTC).timestamp() * 1000),
                "message": json.dumps(rejected),
            }
        ],
    )
    report = _redrive(aws, fake, max_age=1800, now=an_hour_later, ledger=LEDGER)
    rows = {r["detail_type"]: r for r in report}
    assert rows["Promotion Requested"]["action"] == (
        "skip: older than 1800 s and already answered (Promotion Rejected in the ledger)"
    )
    assert not rows["Promotion Requested"]["done"] and rows["RDS DB Snapshot Event"]["done"]
    assert [json.loads(i["Payload"])["detail-type"] for i in fake.invoked] == ["RDS DB Snapshot Event"]
    assert _count(aws["sqs"], aws["rules"]) == 2  # the request and the unroutable event stay

    # within the window, requests go back without a look at the ledger
    report = _redrive(aws, fake, max_age=7200, now=an_hour_later)
    assert sum(r["done"] for r in report) == 3
