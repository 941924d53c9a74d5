"""The CLI resolves tierlift's bus in one place: ``--event-bus-name``, ``TIERLIFT_EVENT_BUS``, ``tierlift-dev``."""

from __future__ import annotations

import json

import pytest

from tierlift import cli
from tierlift.errors import OperatorError


def test_the_bus_is_the_flag_then_the_setting_then_tierlift_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERLIFT_EVENT_BUS", raising=False)
    assert cli._event_bus() == "tierlift-dev"
    monkeypatch.setenv("TIERLIFT_EVENT_BUS", "tierlift-prod")
    assert cli._event_bus() == "tierlift-prod"
    monkeypatch.setenv("TIERLIFT_EVENT_BUS", "default")
    with pytest.raises(OperatorError, match="bus of their own"):
        cli._event_bus()
    args = cli.parser().parse_args(["--event-bus-name", "tierlift-x", "snapshot", "xy-0146"])
    assert args.event_bus_name == "tierlift-x"
    args = cli.parser().parse_args(["snapshot", "xy-0146", "--event-bus-name", "tierlift-y"])
    assert args.event_bus_name == "tierlift-y"


def test_commands_put_on_that_bus(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERLIFT_EVENT_BUS", "tierlift-ops")
    events, sqs = aws.client("events"), aws.client("sqs")
    events.create_event_bus(Name="tierlift-ops")
    urls = {}
    for bus in ("default", "tierlift-ops"):
        urls[bus] = sqs.create_queue(QueueName=f"seen-{bus}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=urls[bus], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=f"all-{bus}", EventPattern=json.dumps({"source": ["tierlift"]}), EventBusName=bus)
        events.put_targets(Rule=f"all-{bus}", EventBusName=bus, Targets=[{"Id": bus, "Arn": arn}])
    cli._put_event(aws, "Snapshot Requested", {"tenant": "xy-0146"})
    [message] = sqs.receive_message(QueueUrl=urls["tierlift-ops"], MaxNumberOfMessages=10)["Messages"]
    assert json.loads(message["Body"])["detail-type"] == "Snapshot Requested"
    assert "Messages" not in sqs.receive_message(QueueUrl=urls["default"], MaxNumberOfMessages=10)
