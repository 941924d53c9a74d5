"""Which EventBridge bus each of tierlift's rules listens on, and who may put events on tierlift's bus.

One place for the packaged template (``tierlift/package.py``) and the local cloud (``tierlift/local``):

- a rule on ``source: tierlift`` (Promotion Requested, Snapshot Requested, the approve and cancel
  commands, the history ledger) sits on tierlift's own bus ``tierlift-<stage>`` (``TIERLIFT_EVENT_BUS``),
  whose resource policy admits only the principals the deployment names;
- a rule on AWS services' events (``aws.rds``, ``aws.cloudformation``, ``aws.ecs``) and a schedule sit on
  the account's default bus, the only bus AWS services deliver to, where only AWS can emit ``aws.*``.

So a ``source: tierlift`` event on the default bus (which any principal with ``events:PutEvents`` on
``*`` can put) matches no rule of tierlift's: it starts nothing and is recorded nowhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUS = "default"
SOURCE = "tierlift"
SETTING = "TIERLIFT_EVENT_BUS"
LOCAL_STAGE = "dev"  # the local cloud runs the "dev" stage's settings


def _ledger_pattern() -> dict[str, Any]:
    from chalicelib.domain.events import OUTPUTS

    # Only the pipeline's own results: detail types the bus policy lets no one but tierlift's functions
    # put (an operator's cancel command shares `Promotion Cancelled`, and is told apart by `command`).
    # Requests and commands are inputs anyone named may send: they never become history.
    return {"source": [SOURCE], "detail-type": sorted(OUTPUTS), "detail": {"command": [{"exists": False}]}}


LEDGER_PATTERN = _ledger_pattern()

# What each kind of principal may put on tierlift's bus (the bus policy's Deny statements enforce it).
# CI requests promotions and snapshots; operators also cancel. Nobody approves on the bus: an approval
# is signed (tierlift's API, IAM-authorised), so its approver is the caller's identity; tierlift's own
# functions put their results and their own requests.
CI_DETAIL_TYPES = ("Promotion Requested", "Snapshot Requested")
OPERATOR_DETAIL_TYPES = (*CI_DETAIL_TYPES, "Promotion Cancelled")


def stage_bus(stage: str) -> str:
    """The bus a pipeline stage deploys: ``tierlift-<stage>``."""
    return f"tierlift-{stage}"


LOCAL_BUS = stage_bus(LOCAL_STAGE)


def own_bus(env: Mapping[str, str] | None = None) -> str:
    """tierlift's bus for an operator's tools: ``TIERLIFT_EVENT_BUS``, else the local/dev stage's bus."""
    value = (os.environ if env is None else env).get(SETTING) or LOCAL_BUS
    if value == DEFAULT_BUS:
        raise ValueError(f"{SETTING}=default: tierlift's rules listen on a bus of their own (tierlift-<stage>)")
    return value


class Route(NamedTuple):
    """One of ``app.py``'s event sources and the bus its rule sits on."""

    name: str  # the function (Chalice's handler name)
    schedule: bool  # a schedule (default bus) rather than an event pattern
    own: bool  # on tierlift's bus (a rule on source tierlift), else on the default bus
    pattern: dict[str, Any] | None  # the event pattern (None for a schedule)
    expression: str | None  # the schedule expression (None for a pattern)


def listens_on_own_bus(pattern: Mapping[str, Any]) -> bool:
    """True for a rule on ``source: tierlift`` events; such a rule matches nothing else."""
    sources = pattern.get("source") or []
    if SOURCE not in sources:
        return False
    if list(sources) != [SOURCE]:
        raise ValueError(f"a rule cannot listen on both buses: source {sources!r} mixes tierlift with AWS sources")
    return True


def routes(event_sources: Iterable[Any]) -> list[Route]:
    """The route of every EventBridge-driven handler among Chalice's ``app.event_sources``."""
    from chalice.app import CloudWatchEventConfig, ScheduledEventConfig

    found: list[Route] = []
    for source in event_sources:
        if isinstance(source, ScheduledEventConfig):
            expression = source.schedule_expression
            text = expression if isinstance(expression, str) else expression.to_string()
            found.append(Route(source.name, True, False, None, text))
        elif isinstance(source, CloudWatchEventConfig):
            pattern = dict(source.event_pattern)
            found.append(Route(source.name, False, listens_on_own_bus(pattern), pattern, None))
    return found


def app_routes() -> list[Route]:
    """The routes of ``app.py``'s handlers (imports the Chalice app of this checkout)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from app import app

    return routes(app.event_sources)


def bus_policy(bus_arn: Any, *, operators: Any, ci: Any, functions: list[Any], scheduler: Any = None) -> dict[str, Any]:
    """The resource policy of tierlift's bus: ``events:PutEvents`` only from the named principals.

    ``operators`` and ``ci`` are role ARNs; ``functions`` the pipeline's function roles (ARNs or
    CloudFormation intrinsics). In one account an identity policy alone would let any principal with
    ``events:PutEvents`` on ``*`` put here, so the named principals are allowed and everyone else is
    **denied** (an explicit deny wins over any identity policy); CI and operators are also held to the
    detail types they may send, and every principal to ``source: tierlift``.
    """
    named = [operators, ci, *functions, *([scheduler] if scheduler is not None else [])]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "NamedPrincipalsPut",
                "Effect": "Allow",
                "Principal": {"AWS": named},
                "Action": "events:PutEvents",
                "Resource": bus_arn,
            },
            {
                "Sid": "NobodyElsePuts",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "events:PutEvents",
                "Resource": bus_arn,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": named}},
            },
            {
                "Sid": "OnlyTierliftEvents",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "events:PutEvents",
                "Resource": bus_arn,
                "Condition": {"StringNotEquals": {"events:source": SOURCE}},
            },
            {
                "Sid": "CiRequestsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "events:PutEvents",
                "Resource": bus_arn,
                "Condition": {
                    "ArnEquals": {"aws:PrincipalArn": ci},
                    "StringNotEquals": {"events:detail-type": list(CI_DETAIL_TYPES)},
                },
            },
            {
                "Sid": "OperatorsCommandsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "events:PutEvents",
                "Resource": bus_arn,
                "Condition": {
                    "ArnEquals": {"aws:PrincipalArn": operators},
                    "StringNotEquals": {"events:detail-type": list(OPERATOR_DETAIL_TYPES)},
                },
            },
            *(
                [
                    {
                        # EventBridge Scheduler's role (the tenants' snapshot schedules): snapshot requests only
                        "Sid": "SchedulesSnapshotsOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "events:PutEvents",
                        "Resource": bus_arn,
                        "Condition": {
                            "ArnEquals": {"aws:PrincipalArn": scheduler},
                            "StringNotEquals": {"events:detail-type": ["Snapshot Requested"]},
                        },
                    }
                ]
                if scheduler is not None
                else []
            ),
        ],
    }
