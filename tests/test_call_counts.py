"""The AWS calls each handler makes on the happy path, counted with a botocore hook.

These are exact: a change that adds a call to a handler's happy path shows up here, on purpose.
"""

V1 = "20261120093000"
V2 = "20261127200000"

# Each handler reads an environment in one listing (a request: its tenant, config included, and again
# once it holds the lock: the read that makes a decision on an older read harmless); every claim is
# verified by one GetParameters. Writes: the lock; the deploy's claim, the db record and the claim's
# completion; the ending (the next state record) and one DeleteParameters (the lock, the deploy entry,
# the state before, the previous db record). An ending drains (one read). The start's
# ``DescribeAccountAttributes`` is cached per container for a minute (the setup's promotion made it), and
# the source snapshot's ``DescribeDBEngineVersions`` per container for an hour (a cold container's first
# promotion makes one more call: tests/test_source_snapshot.py pins it; bench promotion's steady state: 30).
EXPECTED = {
    "snapshot_requested": {"ssm:GetParameter": 1, "rds:CreateDBSnapshot": 1},
    "snapshot_created": {"ssm:GetParameter": 1, "events:PutEvents": 1},
    "promotion_requested": {
        "ssm:GetParametersByPath": 2,
        "rds:DescribeDBSnapshots": 1,
        "ssm:PutParameter": 1,  # the lock
        "cloudformation:CreateStack": 1,
        "events:PutEvents": 1,
    },
    "create_complete": {
        "ssm:GetParametersByPath": 1,
        "ssm:GetParameters": 1,  # the claim verified
        "cloudformation:DescribeStacks": 1,
        "ecs:DescribeServices": 1,
        "ecs:DescribeTaskDefinition": 1,
        "ssm:PutParameter": 3,  # the claim, db/<version>, the claim completed
        "ecs:RegisterTaskDefinition": 1,
        "ecs:UpdateService": 1,
        "events:PutEvents": 1,
    },
    "deployment_completed": {
        "ssm:GetParametersByPath": 2,  # the environment; the drain's read after the release
        "ssm:GetParameters": 1,  # the ending verified
        "ssm:PutParameter": 1,  # the ending: the next state record
        "cloudformation:DescribeStacks": 1,
        "cloudformation:DeleteStack": 1,
        "events:PutEvents": 1,
        "ssm:DeleteParameters": 1,
    },
    "deployment_failed": {
        "ssm:GetParametersByPath": 2,
        "ssm:GetParameters": 1,
        "ssm:PutParameter": 1,
        "ecs:DescribeServices": 1,
        "ecs:UpdateService": 1,
        "cloudformation:DescribeStacks": 1,
        "cloudformation:DeleteStack": 1,
        "events:PutEvents": 1,
        "ssm:DeleteParameters": 1,
    },
}


def measure(pipeline, calls, outcome):
    pipeline.snapshot(V1)
    pipeline.promote(V1)
    counts = {}
    calls.calls.clear()
    pipeline.invoke("snapshot_requested", pipeline.events.snapshot_requested(when="2026-11-27T20:00:00Z"))
    counts["snapshot_requested"] = calls.by_service()
    calls.calls.clear()
    pipeline.invoke("snapshot_created", pipeline.events.snapshot_created(f"xy-0146-dev-{V2}"))
    counts["snapshot_created"] = calls.by_service()
    request = pipeline.outbox.drain()[-1]
    calls.calls.clear()
    pipeline.invoke("promotion_requested", request)
    counts["promotion_requested"] = calls.by_service()
    calls.calls.clear()
    pipeline.stack_event(V2, "CREATE_COMPLETE")
    counts["create_complete"] = calls.by_service()
    deployment_id = pipeline.promotion().deployment_id
    calls.calls.clear()
    pipeline.deployment_event(outcome, deployment_id=deployment_id)
    counts[f"deployment_{outcome.lower()}"] = calls.by_service()
    for name, by_op in counts.items():
        print(f"{name}: {sum(by_op.values())} calls {by_op}")
    return counts


def test_happy_path_call_counts(pipeline, calls):
    counts = measure(pipeline, calls, "COMPLETED")
    for name in ("snapshot_requested", "snapshot_created", "promotion_requested", "create_complete"):
        assert counts[name] == EXPECTED[name], name
    assert counts["deployment_completed"] == EXPECTED["deployment_completed"]


def test_rollback_call_counts(pipeline, calls):
    counts = measure(pipeline, calls, "FAILED")
    assert counts["deployment_failed"] == EXPECTED["deployment_failed"]
