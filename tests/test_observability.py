"""Retries, logging and tracing of the Lambda wing."""

import json
import logging

from aws_xray_sdk.core import xray_recorder

from chalicelib import observability
from chalicelib.aws import RETRY_CONFIG


def test_clients_use_botocore_standard_retries(deps):
    assert RETRY_CONFIG.retries["mode"] == "standard"
    for client in (deps.store._ssm, deps.rds.client, deps.stacks.client, deps.services.client, deps.bus.client):
        assert client.meta.config.retries["mode"] == "standard"
    assert RETRY_CONFIG.retries["total_max_attempts"] == 5


def test_traced_annotates_the_subsegment_not_the_segment(monkeypatch):
    monkeypatch.setattr(observability, "_tracing", True)
    xray_recorder.configure(sampling=False, context_missing="LOG_ERROR")
    segment = xray_recorder.begin_segment("facade")
    try:
        with observability.traced("promotion_requested", handler="promotion_requested", tenant="xy-0146"):
            sub = xray_recorder.current_subsegment()
            assert sub is not None and sub.name == "promotion_requested"
        assert sub.annotations == {"handler": "promotion_requested", "tenant": "xy-0146"}
        assert segment.annotations == {}
    finally:
        xray_recorder.end_segment()


def test_traced_is_a_no_op_outside_lambda():
    assert observability._tracing is False
    with observability.traced("x", tenant="t"):
        pass


def test_log_lines_are_json_with_the_outcome(caplog):
    formatter = observability.JsonFormatter()
    record = logging.LogRecord("tierlift", logging.INFO, __file__, 1, "%s: %s", ("h", "start"), None)
    record.handler = "h"
    record.data = {"action": "start", "namespace": "xy-0146-qa"}
    line = json.loads(formatter.format(record))
    assert line == {
        "level": "INFO",
        "logger": "tierlift",
        "message": "h: start",
        "handler": "h",
        "action": "start",
        "namespace": "xy-0146-qa",
    }
