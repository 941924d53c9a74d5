"""The local cloud's pure parts: envelopes against AWS's samples, routing patterns, faults, rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from moto.events.models import EventPattern

from app import app
from tierlift.local import awsevents
from tierlift.local.cloud import chalice_environment, schedule_period
from tierlift.local.faults import CallCounter, Faults, InjectedCrash
from tierlift.local.timeline import describe_event, namespace_of
from tierlift.moto_patches import is_unhealthy_image

SAMPLES = [Path(__file__).resolve().parents[1] / "events"]
WHEN = datetime(2026, 11, 27, 20, 4, 37, 219000, tzinfo=UTC)
STACK = "arn:aws:cloudformation:us-east-1:123456789012:stack/xy-0146-qa-db-20261127200000/5b2e8a40"


def sample(name: str) -> dict[str, Any]:
    for folder in SAMPLES:
        if (folder / name).exists():
            return dict(json.loads((folder / name).read_text()))
    pytest.skip(f"sample {name} not available")


def delivered(entry: dict[str, Any]) -> dict[str, Any]:
    """What EventBridge delivers for a PutEvents entry (the documented field mapping)."""
    return {
        "version": "0",
        "id": "x",
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "account": "123456789012",
        "time": datetime.fromtimestamp(entry["Time"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": entry["Resources"],
        "detail": json.loads(entry["Detail"]),
    }


def pattern(name: str) -> EventPattern:
    source = next(s for s in app.event_sources if s.name == name)
    return EventPattern.load(json.dumps(source.event_pattern))


CASES = [
    (
        "rds-snapshot-creating-manual.json",
        awsevents.rds_snapshot("RDS-EVENT-0040", "xy-0146-dev-20261127200000", "us-east-1", WHEN),
    ),
    (
        "rds-snapshot-created-manual.json",
        awsevents.rds_snapshot("RDS-EVENT-0042", "xy-0146-dev-20261127200000", "us-east-1", WHEN),
    ),
    (
        "rds-snapshot-creating-automated.json",
        awsevents.rds_snapshot("RDS-EVENT-0090", "rds:xy-0146-dev-2026-11-27-03-10", "us-east-1", WHEN),
    ),
    (
        "rds-snapshot-created-automated.json",
        awsevents.rds_snapshot("RDS-EVENT-0091", "rds:xy-0146-dev-2026-11-27-03-10", "us-east-1", WHEN),
    ),
    (
        "rds-instance-restored-from-snapshot.json",
        awsevents.rds_instance(
            "RDS-EVENT-0043",
            "xy-0146-qa-20261127200000",
            "Restored from snapshot xy-0146-dev-20261127200000",
            "restoration",
            "us-east-1",
            WHEN,
        ),
    ),
    (
        "rds-instance-deleted.json",
        awsevents.rds_instance(
            "RDS-EVENT-0003", "xy-0146-qa-20261120093000", "DB instance deleted", "deletion", "us-east-1", WHEN
        ),
    ),
    ("rds-snapshot-deleted.json", awsevents.rds_snapshot("RDS-EVENT-0041", "rds:my-db-snapshot", "us-east-1", WHEN)),
    ("cfn-stack-create-in-progress.json", awsevents.stack_status(STACK, "CREATE_IN_PROGRESS", "User Initiated", WHEN)),
    ("cfn-stack-create-complete.json", awsevents.stack_status(STACK, "CREATE_COMPLETE", "", WHEN)),
    ("cfn-stack-rollback-complete.json", awsevents.stack_status(STACK, "ROLLBACK_COMPLETE", "", WHEN)),
    (
        "cfn-resource-status-change.json",
        awsevents.resource_status(STACK, "DBInstance", "", "AWS::RDS::DBInstance", "CREATE_FAILED", "x", WHEN),
    ),
    (
        "ecs-deployment-in-progress.json",
        awsevents.ecs_deployment(
            "SERVICE_DEPLOYMENT_IN_PROGRESS", "ecs-svc/1", "common-nonprod", "xy-0146-qa", "us-east-1", WHEN
        ),
    ),
    (
        "ecs-deployment-completed.json",
        awsevents.ecs_deployment(
            "SERVICE_DEPLOYMENT_COMPLETED", "ecs-svc/1", "common-nonprod", "xy-0146-qa", "us-east-1", WHEN
        ),
    ),
    (
        "ecs-deployment-failed.json",
        awsevents.ecs_deployment(
            "SERVICE_DEPLOYMENT_FAILED", "ecs-svc/1", "common-nonprod", "xy-0146-qa", "us-east-1", WHEN
        ),
    ),
]


@pytest.mark.parametrize(("name", "entry"), CASES, ids=[c[0] for c in CASES])
def test_emitted_events_have_the_shape_of_aws_samples(name: str, entry: dict[str, Any]) -> None:
    expected, event = sample(name), delivered(entry)
    assert set(event) == set(expected) - {"replay-name"}
    assert (event["source"], event["detail-type"]) == (expected["source"], expected["detail-type"])
    assert set(event["detail"]) == set(expected["detail"])
    for key in ("EventID", "Message", "SourceType", "EventCategories", "eventType", "eventName", "reason"):
        if key in expected["detail"] and key in ("EventID", "SourceType", "EventCategories", "eventType", "eventName"):
            assert event["detail"][key] == expected["detail"][key], key
    if "Date" in expected["detail"]:
        assert event["detail"]["Date"] == "2026-11-27T20:04:37.219Z"


def test_scheduled_event_has_the_shape_of_the_sample() -> None:
    event = awsevents.scheduled(
        "arn:aws:events:us-east-1:123456789012:rule/tierlift-local-sweep", WHEN, "id", "us-east-1"
    )
    expected = sample("scheduled-event.json")
    assert set(event) == set(expected) and event["detail"] == {} and event["source"] == "aws.events"


def test_the_apps_own_patterns_route_the_emulated_events() -> None:
    snap = "xy-0146-dev-20261127200000"
    assert pattern("snapshot_created").matches_event(
        delivered(awsevents.rds_snapshot("RDS-EVENT-0042", snap, "us-east-1", WHEN))
    )
    for event_id in ("RDS-EVENT-0040", "RDS-EVENT-0090", "RDS-EVENT-0091"):
        assert not pattern("snapshot_created").matches_event(
            delivered(awsevents.rds_snapshot(event_id, snap, "us-east-1", WHEN))
        )
    for status, routed in (
        ("CREATE_COMPLETE", True),
        ("ROLLBACK_COMPLETE", True),
        ("DELETE_COMPLETE", True),
        ("CREATE_IN_PROGRESS", False),
        ("ROLLBACK_IN_PROGRESS", False),
    ):
        assert (
            pattern("stack_status").matches_event(delivered(awsevents.stack_status(STACK + "/x", status, "", WHEN)))
            is routed
        )
    for name, routed in (
        ("SERVICE_DEPLOYMENT_COMPLETED", True),
        ("SERVICE_DEPLOYMENT_FAILED", True),
        ("SERVICE_DEPLOYMENT_IN_PROGRESS", False),
    ):
        event = delivered(
            awsevents.ecs_deployment(name, "ecs-svc/1", "common-nonprod", "xy-0146-qa", "us-east-1", WHEN)
        )
        assert pattern("deployment_state").matches_event(event) is routed


def test_faults_parse_and_count_down() -> None:
    with pytest.raises(ValueError, match="unknown fault knobs"):
        Faults.parse('{"dupliacte": 1}')
    with pytest.raises(ValueError, match="do not parse"):
        Faults.parse({"crash": [{"handler": "x"}]})
    assert not Faults.parse("").active and not Faults.parse("{}").active
    faults = Faults.parse(
        {
            "drop": {"event_ids": ["RDS-EVENT-0042"], "count": 1},
            "throttle": [
                {"operation": "cloudformation:DescribeStacks", "count": 1},
                {"operation": "PutEvents", "count": 1},
            ],
            "fail_stacks": ["xy-0146-qa-db-*"],
        }
    )
    created = awsevents.rds_snapshot("RDS-EVENT-0042", "s", "us-east-1", WHEN)
    assert not faults.should_drop(awsevents.rds_snapshot("RDS-EVENT-0040", "s", "us-east-1", WHEN))
    assert faults.should_drop(created) and not faults.should_drop(created)
    assert not faults.should_throttle("rds", "DescribeStacks")
    assert faults.should_throttle("cloudformation", "DescribeStacks")
    assert not faults.should_throttle("cloudformation", "DescribeStacks")
    assert faults.should_throttle("events", "PutEvents")
    assert faults.stack_failure("xy-0146-qa-db-20261127200000")
    assert faults.stack_failure("xy-0146-prod-db-20261127200000") is None


def test_crash_after_k_calls() -> None:
    faults = Faults.parse({"crash": [{"handler": "stack_status", "after_calls": 2, "times": 1}]})
    counter = CallCounter()
    counter.start("stack_status", faults.crash_after("stack_status"), faults)
    counter()
    assert counter.stop() == 1  # an invocation that never reaches call 3 does not use the crash up
    counter.start("stack_status", faults.crash_after("stack_status"), faults)
    counter()
    counter()
    with pytest.raises(InjectedCrash, match="after 2 call"):
        counter()
    assert counter.stop() == 3
    counter.start("stack_status", faults.crash_after("stack_status"), faults)  # used up: no crash now
    for _ in range(5):
        counter()
    assert counter.stop() == 5


def test_crash_counts_are_per_invocation_thread() -> None:
    """Two invocations running side by side count their own calls: only the armed one crashes."""
    import threading

    faults = Faults.parse({"crash": [{"handler": "a", "after_calls": 1, "times": 1}]})
    counter = CallCounter()
    outcome: dict[str, str] = {}
    ready = threading.Barrier(2)

    def run(handler: str) -> None:
        counter.start(handler, faults.crash_after(handler), faults)
        ready.wait()
        try:
            for _ in range(3):
                counter()
                ready.wait()
            outcome[handler] = "done"
        except InjectedCrash:
            outcome[handler] = "crashed"
            ready.abort()
        except threading.BrokenBarrierError:
            outcome[handler] = "done"
        finally:
            counter.stop()

    threads = [threading.Thread(target=run, args=(h,)) for h in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert outcome == {"a": "crashed", "b": "done"}


def test_simultaneous_and_probabilistic_crash_knobs() -> None:
    faults = Faults.parse(
        {"seed": 1, "simultaneous": 1.0, "crash": [{"handler": "*", "after_calls": 0, "times": 2, "probability": 0.5}]}
    )
    assert faults.active and faults.should_duplicate_simultaneously()
    armed = [faults.crash_after("x") is not None for _ in range(200)]
    assert 40 < sum(armed) < 160  # about half the invocations are armed
    with pytest.raises(ValueError, match="unknown fault knobs"):
        Faults.parse({"simultaneous": 1, "nope": 1})


def test_poison_fails_every_attempt_until_dead_lettered() -> None:
    faults = Faults.parse({"poison": {"handler": "promotion_requested", "count": 1}})
    assert faults.active
    assert not faults.poisoned("stack_status", "e-1")  # another handler
    assert faults.poisoned("promotion_requested", "e-1")  # the first event it sees is the poison
    assert faults.poisoned("promotion_requested", "e-1")  # every attempt, and any duplicate of it
    assert not faults.poisoned("promotion_requested", "e-2")  # count used up: other events are served
    faults.heal("e-1")  # dead-lettered: its redrive goes through
    assert not faults.poisoned("promotion_requested", "e-1")


def test_retries_keep_the_request_id_duplicates_get_their_own() -> None:
    from tierlift.local.cloud import Invocation, LocalCloud

    cloud = LocalCloud(port=0, concurrency=2)
    first = cloud._push("h", {"id": "e"}, 0.0)
    cloud._retry(first, 60.0)
    cloud.deliver("h", {"id": "e"}, copies=2)
    pending: list[Invocation] = cloud._pending
    retry = next(i for i in pending if i.attempt == 1)
    assert retry.request_id == first.request_id
    twins = [i for i in pending if i.barrier is not None]
    assert len(twins) == 2 and twins[0].barrier is twins[1].barrier
    assert len({first.request_id, *(t.request_id for t in twins)}) == 3


def test_local_rules() -> None:
    assert is_unhealthy_image("public.ecr.aws/nginx/nginx:unhealthy")
    assert is_unhealthy_image("repo:5000/app:unhealthy-42")
    assert not is_unhealthy_image("repo:5000/app")
    assert not is_unhealthy_image("nginx:1.27")
    assert not is_unhealthy_image("unhealthy/app:1")
    assert schedule_period("rate(1 hour)") == 3600
    assert schedule_period("rate(5 minutes)") == 300
    assert schedule_period("cron(0 3 * * ? *)") is None
    assert chalice_environment()["TIERLIFT_SSM_ROOT"] == "/tierlift"
    assert chalice_environment()["TIERLIFT_GRACE_SECONDS"] == "3600"  # the dev stage's own


def test_timeline_describes_events() -> None:
    assert namespace_of("rds:xy-0146-qa-20261127200000-2026-11-27-21-14") == "xy-0146-qa"
    assert namespace_of("xy-0146-qa-db-20261127200000") == "xy-0146-qa"
    assert namespace_of("vpc-123") == "-"
    what, stage, ns, _ = describe_event(delivered(awsevents.stack_status(STACK + "/x", "CREATE_COMPLETE", "", WHEN)))
    assert (what, stage, ns) == ("aws.cloudformation: stack", "CREATE_COMPLETE", "xy-0146-qa")
    event = {
        "source": "tierlift",
        "detail-type": "Promotion Started",
        "detail": {"tenant": "xy-0146", "environment": "qa", "version": "1"},
    }
    assert describe_event(event)[1:3] == ("restoring", "xy-0146-qa")
