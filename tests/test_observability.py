"""Retries, logs, metrics and traces of the Lambda wing."""

import io
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

import boto3
import pytest
from aws_xray_sdk.core import xray_recorder

from chalicelib import entry, observability
from chalicelib.adapters.aws import RETRY_CONFIG
from chalicelib.deps import Deps, LazyClient
from chalicelib.observability import metrics
from chalicelib.settings import Settings
from tests.conftest import sample


@dataclass(frozen=True)
class Outcome:
    """The use cases' outcome shape (``promotion.Outcome``): ``as_log()`` for the log line."""

    action: str
    reason: str = ""
    promotion_id: str | None = None
    namespace: str | None = None

    def as_log(self):
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


def test_clients_use_botocore_standard_retries(deps):
    assert RETRY_CONFIG.retries["mode"] == "standard"
    for client in (
        deps.store.parameters.client,
        deps.rds.client,
        deps.stacks.client,
        deps.services.client,
        deps.bus.client,
    ):
        assert client.meta.config.retries["mode"] == "standard"
    assert RETRY_CONFIG.retries["total_max_attempts"] == 5


def test_clients_are_created_on_first_use():
    deps = Deps.from_session(boto3.session.Session(region_name="us-east-1"), Settings())
    lazy = [deps.store.parameters.client, deps.rds.client, deps.stacks.client, deps.services.client, deps.bus.client]
    assert all(isinstance(c, LazyClient) and not c.created for c in lazy)
    assert deps.rds.client.meta.service_model.service_name == "rds"
    assert [c.created for c in lazy] == [False, True, False, False, False]


# --------------------------------------------------------------------------------------------------
# Traces
# --------------------------------------------------------------------------------------------------
class _Tracer:
    """Powertools' Tracer as observability uses it: ``provider`` is the X-Ray recorder."""

    provider = xray_recorder


@pytest.fixture
def facade(monkeypatch):
    """A segment standing for Lambda's facade segment, and tracing on as in Lambda."""
    monkeypatch.setattr(observability, "_tracer", _Tracer())
    xray_recorder.configure(sampling=False, context_missing="LOG_ERROR")
    segment = xray_recorder.begin_segment("facade")
    yield segment
    xray_recorder.end_segment()


def _handler_subsegment(segment):
    (sub,) = segment.subsegments
    return sub


def test_traced_annotates_the_subsegment_not_the_segment(facade):
    with observability.traced("promotion_requested", handler="promotion_requested", tenant="xy-0146") as span:
        sub = xray_recorder.current_subsegment()
        assert sub is not None and sub.name == "promotion_requested"
        span.annotate(action="start", version=None)
    assert sub.annotations == {"handler": "promotion_requested", "tenant": "xy-0146", "action": "start"}
    assert facade.annotations == {}


def test_traced_is_a_no_op_outside_lambda():
    assert observability._tracer is None
    with observability.traced("x", tenant="t") as span:
        span.annotate(tenant="u")


def _run(name, event, outcome, monkeypatch):
    monkeypatch.setattr(entry, "get_deps", lambda: None)
    return entry.run(name, lambda deps, raw: outcome, entry.raw, event, "req-1")


def test_a_promotion_request_is_annotated_from_its_event(facade, monkeypatch):
    event = sample("custom-event-tierlift-promotion-requested.json")
    _run("promotion_requested", event, Outcome("start", "creating", event["id"], "xy-0146-qa"), monkeypatch)
    assert _handler_subsegment(facade).annotations == {
        "handler": "promotion_requested",
        "tenant": "xy-0146",
        "environment": "qa",
        "version": "20261127200000",
        "promotion_id": event["id"],
        "action": "start",
    }
    assert facade.annotations == {}


def test_a_stack_event_is_annotated_from_the_stack_name(facade, monkeypatch):
    event = sample("cfn-stack-create-complete.json")
    _run("stack_status", event, Outcome("deploy", "service updated", "p-1", "xy-0146-qa"), monkeypatch)
    annotations = _handler_subsegment(facade).annotations
    assert annotations["tenant"] == "xy-0146" and annotations["environment"] == "qa"
    assert annotations["version"] == "20261127200000"
    assert annotations["promotion_id"] == "p-1"


def test_a_deployment_event_is_annotated_from_the_outcome(facade, monkeypatch):
    event = sample("ecs-deployment-completed.json")
    _run("deployment_state", event, Outcome("complete", "", "p-2", "xy-0146-prod"), monkeypatch)
    annotations = _handler_subsegment(facade).annotations
    assert annotations == {
        "handler": "deployment_state",
        "tenant": "xy-0146",
        "environment": "prod",
        "promotion_id": "p-2",
        "action": "complete",
    }


def test_hostile_event_values_are_not_annotated(facade, monkeypatch):
    event = sample("custom-event-tierlift-promotion-requested.json")
    event["detail"] = {"tenant": "../xy-0146", "environment": {"x": 1}, "version": "2026-11-27"}
    _run("promotion_requested", event, Outcome("reject", "bad tenant", event["id"]), monkeypatch)
    annotations = _handler_subsegment(facade).annotations
    assert "tenant" not in annotations and "environment" not in annotations and "version" not in annotations
    assert annotations["action"] == "reject"


# --------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------
def test_log_lines_are_powertools_json_with_the_outcome_flattened():
    record = logging.LogRecord("chalicelib.entry", logging.INFO, __file__, 1, "%s: %s", ("h", "start"), None)
    record.handler = "h"
    record.data = {"action": "start", "namespace": "xy-0146-qa"}
    line = json.loads(observability.formatter().format(record))
    assert line["level"] == "INFO"
    assert line["message"] == "h: start"
    assert line["service"] == "tierlift"
    assert {k: line[k] for k in ("handler", "action", "namespace")} == {
        "handler": "h",
        "action": "start",
        "namespace": "xy-0146-qa",
    }
    assert "data" not in line and "timestamp" in line


@pytest.fixture
def log_lines():
    """Every line the root logger prints, as the Lambda's log stream would hold them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(observability.formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    observability.setup(logging.getLevelName(level))


def test_the_outcome_line_is_kept_when_the_stage_logs_at_warning(log_lines, monkeypatch):
    observability.setup("WARNING")

    def use_case(deps, raw):
        logging.getLogger("chalicelib.usecases.requests").info("an info line prod does not want")
        logging.getLogger("chalicelib.usecases.requests").warning("promotion rejected: bad tenant")
        return Outcome("reject", "bad tenant", "p-3")

    monkeypatch.setattr(entry, "get_deps", lambda: None)
    entry.run(
        "promotion_requested", use_case, entry.raw, sample("custom-event-tierlift-promotion-requested.json"), "req-9"
    )
    lines = log_lines()
    assert [line["message"] for line in lines] == ["promotion rejected: bad tenant", "promotion_requested: reject"]
    outcome = lines[-1]
    assert outcome["level"] == "INFO"
    assert (outcome["action"], outcome["reason"], outcome["promotion_id"]) == ("reject", "bad tenant", "p-3")
    assert outcome["handler"] == "promotion_requested" and outcome["invocation_id"] == "req-9"
    assert lines[0]["invocation_id"] == "req-9"  # every line of the invocation carries its id


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def emf(monkeypatch, capsys):
    """Metrics on, as in Lambda; returns the EMF documents printed so far."""
    monkeypatch.setattr(metrics, "enabled", True)
    capsys.readouterr()

    def printed():
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]

    return printed


def _metric(doc):
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    (metric,) = directive["Metrics"]
    return directive["Namespace"], directive["Dimensions"], metric["Name"], metric["Unit"], doc[metric["Name"]]


@pytest.mark.parametrize("per_tenant", [False, True])
def test_promotion_metrics_are_emf_per_environment_with_the_tenant_a_property(emf, monkeypatch, per_tenant):
    monkeypatch.setattr(metrics, "per_tenant", per_tenant)
    metrics.promotion_started("xy-0146", "qa")
    metrics.promotion_ended("xy-0146", "qa", "completed", 1520.25)
    metrics.promotion_ended("xy-0146", "prod", "rolled_back")
    metrics.stage_completed("xy-0146", "qa", "restoring", 1200)
    docs = emf()
    dims = ["tenant", "environment"] if per_tenant else ["environment"]
    assert [_metric(d) for d in docs] == [
        ("tierlift", [dims], "PromotionsStarted", "Count", [1.0]),
        ("tierlift", [dims], "PromotionsCompleted", "Count", [1.0]),
        ("tierlift", [dims], "PromotionDuration", "Seconds", [1520.25]),
        ("tierlift", [dims], "PromotionsRolledBack", "Count", [1.0]),
        ("tierlift", [[*dims, "stage"]], "StageDuration", "Seconds", [1200.0]),
    ]
    # the tenant is on every line either way: a property searchable in Logs Insights
    assert (docs[0]["tenant"], docs[0]["environment"]) == ("xy-0146", "qa")
    assert docs[-1]["stage"] == "restoring"


def test_every_outcome_has_its_metric(emf):
    from chalicelib.domain.model import Outcome as Ending

    for outcome in Ending:
        metrics.promotion_ended("xy-0146", "qa", outcome)
    metrics.promotion_rejected("xy-0146", "qa")
    names = [_metric(d)[2] for d in emf()]
    assert names == [
        "PromotionsCompleted",
        "PromotionsFailed",
        "PromotionsRolledBack",
        "PromotionsCancelled",
        "PromotionsRejected",
        "PromotionsRejected",
    ]


def test_the_sweep_counts_each_stuck_promotion_per_environment_with_the_tenant_a_property(pipeline, emf):
    from dataclasses import replace

    from chalicelib.usecases.sweep import run_sweep

    pipeline.snapshot("20261120093000")
    pipeline.request("qa", "20261120093000")  # restoring: its CREATE_COMPLETE never comes
    later = replace(pipeline.deps, clock=lambda: pipeline.deps.clock() + timedelta(days=1))
    emf()
    run_sweep(later, dry_run=True)
    assert [d for d in emf() if _metric(d)[2] == "PromotionsStuck"] == []  # a dry run counts nothing
    result = run_sweep(later)
    assert [e.item.reason for e in result.by_kind("reconcile")] == ["stuck_restoring"]
    stuck = [d for d in emf() if _metric(d)[2] == "PromotionsStuck"]
    assert [_metric(d) for d in stuck] == [("tierlift", [["environment"]], "PromotionsStuck", "Count", [1.0])]
    assert (stuck[0]["tenant"], stuck[0]["environment"]) == ("xy-0146", "qa")


def test_a_rejection_of_an_unknown_namespace_is_counted_as_unknown(emf):
    metrics.promotion_rejected(None, None)
    (doc,) = emf()
    assert (doc["tenant"], doc["environment"]) == ("unknown", "unknown")


def test_metrics_are_silent_outside_lambda_but_still_checked(capsys):
    assert metrics.enabled is False
    metrics.promotion_started("xy-0146", "qa")
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="outcome"):
        metrics.promotion_ended("xy-0146", "qa", "succeeded")
    with pytest.raises(ValueError, match="dimension"):
        metrics.promotion_started("xy-0146", "qa env")
    with pytest.raises(ValueError, match="negative"):
        metrics.stage_completed("xy-0146", "qa", "restoring", -1)


def test_enum_members_name_their_value(emf):
    from enum import StrEnum

    class Stage(StrEnum):
        DEPLOYING = "deploying"

    metrics.stage_completed("xy-0146", "qa", Stage.DEPLOYING, 42)
    (doc,) = emf()
    assert doc["stage"] == "deploying"


# --------------------------------------------------------------------------------------------------
# Dashboard
# --------------------------------------------------------------------------------------------------
def test_the_dashboard_has_a_widget_per_metric_and_per_stage():
    from pathlib import Path

    from chalicelib.domain.model import Outcome as Ending
    from chalicelib.domain.model import Stage

    template = json.loads((Path(__file__).resolve().parents[1] / "templates" / "dashboard.json").read_text())
    dashboard = template["Resources"]["Dashboard"]
    assert dashboard["Type"] == "AWS::CloudWatch::Dashboard"
    body = json.loads(dashboard["Properties"]["DashboardBody"]["Fn::Sub"].replace("${AWS::Region}", "eu-west-1"))
    searches = [
        metric["expression"]
        for widget in body["widgets"]
        if widget["type"] == "metric"
        for (metric,) in widget["properties"]["metrics"]
    ]
    assert all(f"{{{observability.METRIC_NAMESPACE}," in s for s in searches)
    named = {s.split('MetricName="')[1].split('"')[0] for s in searches}
    emitted = {*metrics.OUTCOMES.values(), "PromotionsStarted", "PromotionDuration"}
    assert named == emitted | {"StageDuration"}
    assert set(metrics.OUTCOMES) == {e.value for e in Ending}  # every way a promotion ends has its metric
    stages = {s.split('stage="')[1].split('"')[0] for s in searches if "StageDuration" in s}
    in_flight = {s.value for s in Stage} - {e.value for e in Ending}
    assert stages == in_flight  # a stage renamed or added needs its widget


def test_stage_entered_is_the_duration_of_the_stage_left(emf):
    metrics.stage_entered("xy-0146", "qa", "requested")  # the first stage: nothing to measure
    metrics.stage_entered("xy-0146", "qa", "deploying", previous="restoring", seconds=600)
    (doc,) = emf()
    assert _metric(doc)[2:] == ("StageDuration", "Seconds", [600.0]) and doc["stage"] == "restoring"
    with pytest.raises(ValueError, match="dimension"):
        metrics.stage_entered("xy-0146", "qa", "not a stage")
