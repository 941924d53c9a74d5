"""The event patterns app.py deploys, checked with moto's EventBridge matcher against the samples.

``chalice.test.Client`` invokes a handler without looking at its pattern, so the routing is tested here.
"""

import json

import pytest
from chalice.app import CloudWatchEventConfig
from moto.events.models import EventPattern

from app import app
from tests.conftest import LOCAL_EVENTS, sample


def _pattern(handler: str) -> EventPattern:
    for source in app.event_sources:
        if isinstance(source, CloudWatchEventConfig) and source.name == handler:
            return EventPattern.load(json.dumps(source.event_pattern))
    raise KeyError(handler)


def _matching(handler: str) -> set[str]:
    pattern = _pattern(handler)
    return {p.name for p in LOCAL_EVENTS.glob("*.json") if _is_event(p.name) and pattern.matches_event(sample(p.name))}


def _is_event(name: str) -> bool:
    return not name.startswith("put-events")


EXPECTED = {
    "promotion_requested": {"custom-event-tierlift-promotion-requested.json"},
    "snapshot_requested": set(),
    "snapshot_created": {"rds-snapshot-created-manual.json"},
    "stack_status": {
        "cfn-stack-create-complete.json",
        "cfn-stack-create-failed.json",
        "cfn-stack-rollback-complete.json",
        "cfn-stack-delete-complete.json",
    },
    "deployment_state": {"ecs-deployment-completed.json", "ecs-deployment-failed.json"},
}


@pytest.mark.parametrize("handler", sorted(EXPECTED))
def test_each_pattern_matches_exactly_its_samples(handler):
    assert _matching(handler) == EXPECTED[handler]


def test_snapshot_requested_pattern():
    event = sample("custom-event-tierlift-promotion-requested.json")
    event["detail-type"] = "Snapshot Requested"
    assert _pattern("snapshot_requested").matches_event(event)
    assert not _pattern("promotion_requested").matches_event(event)


def test_stack_pattern_ignores_stacks_that_are_not_db_stacks():
    event = sample("cfn-stack-create-complete.json")
    event["detail"]["stack-id"] = "arn:aws:cloudformation:us-east-1:123456789012:stack/some-app/5b2e8a40"
    assert not _pattern("stack_status").matches_event(event)


def test_foreign_source_is_not_routed():
    event = sample("custom-event-tierlift-promotion-requested.json")
    event["source"] = "com.mycompany.myapp"
    assert not _pattern("promotion_requested").matches_event(event)
