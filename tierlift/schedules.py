"""The operator's side of the snapshot schedules: the stage's EventBridge Scheduler group, as deployed.

``tierlift tenant register`` and ``deregister`` keep the tenant's schedule what its config says
(:func:`chalicelib.usecases.schedules.sync`); the sweep repairs drift.
"""

from __future__ import annotations

import boto3

from chalicelib.adapters.scheduler import Schedules
from tierlift import buses


def stage_schedules(session: boto3.session.Session, bus: str | None = None) -> Schedules:
    """The schedule group ``tierlift-<stage>``, its role ``tierlift-<stage>-scheduler`` and tierlift's bus."""
    bus = bus or buses.own_bus()
    stage = bus.removeprefix("tierlift-")
    sts = session.client("sts")
    account, region = sts.get_caller_identity()["Account"], sts.meta.region_name
    return Schedules(
        session.client("scheduler"),
        f"tierlift-{stage}",
        f"arn:aws:events:{region}:{account}:event-bus/{bus}",
        f"arn:aws:iam::{account}:role/tierlift-{stage}-scheduler",
    )
