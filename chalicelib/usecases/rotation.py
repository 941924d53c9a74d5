"""A rotated DB secret: the environment's tasks are rolled so that they read the new password.

ECS injects ``DB_PASSWORD`` from the RDS-managed secret when a task starts; after Secrets Manager rotates
it (every 7 days by default), a long-running task's new connections fail. On ``RotationSucceeded`` the
pipeline finds the DB instance the secret belongs to (RDS tags the secret with the instance's ARN) and,
if it is an environment's active DB, requests a **redeploy** of that version: a request like any other,
under the environment's lock (queued behind a promotion in flight, never racing it; a promotion queued
with it goes first), ending in the ledger as ``Promotion Completed`` with ``redeploy`` in its start. The
service is rolled onto the task definition it runs (``forceNewDeployment``); the DB is untouched.
"""

from __future__ import annotations

import logging

from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.cells import Cell, CellRefused
from chalicelib.domain.config import InvalidConfig
from chalicelib.domain.model import UnknownTenant
from chalicelib.domain.names import InvalidName, Versioned
from chalicelib.usecases.cells import foreign
from chalicelib.usecases.requests import on_promotion_requested
from chalicelib.usecases.transitions import Result, ignore

logger = logging.getLogger(__name__)

INSTANCE_TAG = "aws:rds:primaryDBInstanceArn"
REQUESTED_BY = "tierlift (secret rotation)"


def _cell_of_event(deps: Deps, command: ev.SecretRotated) -> Cell | None:
    """The cell a rotation happened in: the event's account when it is not the central one (a cell
    forwarded it), reached through that account's ``tierlift-cell-<stage>`` role; None: central."""
    settings = deps.settings
    central = settings.central_account
    if command.account is None or central is None or command.account == central:
        return None
    role = f"arn:aws:iam::{command.account}:role/{settings.cell_role_name}"
    return Cell(command.account, command.region or "us-east-1", role)


def on_secret_rotated(deps: Deps, command: ev.SecretRotated) -> Result:
    cell = _cell_of_event(deps, command)
    try:
        tags = deps.in_cell(cell, "rotation").secrets.tags(command.secret_id)
    except CellRefused as exc:
        return ignore(f"secret {command.secret_id}: {exc}")
    if tags is None:
        return ignore(f"secret {command.secret_id} is gone", expected=True)
    arn = tags.get(INSTANCE_TAG)
    if not arn:
        return ignore(f"secret {command.secret_id} is not an RDS-managed secret of a DB instance", expected=True)
    try:
        versioned = Versioned.parse_instance(arn.rsplit(":db:", 1)[-1])
    except InvalidName:
        return ignore(f"secret of {arn}, not a DB instance of tierlift's", expected=True)
    ns = versioned.namespace
    if cell is not None:
        try:
            configured = deps.store.get_config(ns.tenant).cell
        except (InvalidConfig, UnknownTenant) as exc:
            return ignore(f"secret of {versioned.instance_id}: {exc}", ns.name)
        refused = foreign(deps, command.account, configured)
        if refused is not None:
            return ignore(f"secret of {versioned.instance_id}: {refused}", ns.name)
    active = deps.store.read(ns).active
    if active != versioned.version:
        return ignore(
            f"secret of {versioned.instance_id}, not the active DB of {ns} ({active})", ns.name, expected=True
        )
    request = ev.PromotionRequest(
        id=f"rotation-{command.id}",
        tenant=ns.tenant,
        environment=ns.environment,
        version=versioned.version,
        image=None,
        requested_by=REQUESTED_BY,
        time=command.time,
        redeploy=f"secret {command.secret_id.rsplit(':', 1)[-1]} rotated",
    )
    return on_promotion_requested(deps, request)
