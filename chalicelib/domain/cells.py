"""Account cells: the AWS account (and region) that holds a tenant's databases, stacks and services.

One central tierlift (its bus, its state in SSM, its signed API and ledger) reaches a tenant that lives
in a cell by assuming the cell's role ``tierlift-cell-<stage>`` (``templates/cell.yaml``) with the
deployment's external id. A tenant config without ``cell`` lives in the central account (the behaviour
before cells). Pure: the parsing and the trust rules only; ``chalicelib.deps`` assumes the role.
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.domain.records import NamedTuple

# Pattern texts, compiled on first use by re's cache rather than at import (docs/performance.md)
_ACCOUNT = r"^[0-9]{12}$"
_REGION = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"
_ROLE = r"^arn:(aws[a-z-]*):iam::([0-9]{12}):role/((?:[A-Za-z0-9+=,.@_-]+/)*)(tierlift-cell[A-Za-z0-9+=,.@_-]*)$"
ROLE_PREFIX = "tierlift-cell"


class CellRefused(Exception):
    """The cell's role could not be assumed (no such role, a trust policy or external id that refuses,
    a region not enabled): the tenant's request ends with this reason; nothing is written."""


class Cell(NamedTuple):
    """Where a tenant's resources live: ``account``/``region``, reached through ``role_arn``."""

    account: str
    region: str
    role_arn: str

    def as_dict(self) -> dict[str, str]:
        return {"account": self.account, "region": self.region, "role_arn": self.role_arn}

    @property
    def key(self) -> str:
        """What per-cell counts are keyed by (quotas are per account and region)."""
        return f"{self.account}/{self.region}"


def cell_key(cell: Cell | None) -> str:
    """The per-cell key of a tenant's cell; ``central`` for the central account."""
    return cell.key if cell is not None else "central"


def parse_cell(value: Any, where: str = "config.cell") -> Cell | None:
    """A config's ``cell`` (None when absent); raises ``ValueError`` naming the field otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f'{where} must be an object {{"account", "region", "role_arn"}}')
    unknown = sorted(set(value) - {"account", "region", "role_arn"})
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}")
    account, region, role = value.get("account"), value.get("region"), value.get("role_arn")
    if not isinstance(account, str) or not re.fullmatch(_ACCOUNT, account):
        raise ValueError(f"{where}.account must be a 12-digit AWS account id, got {account!r}")
    if not isinstance(region, str) or not re.fullmatch(_REGION, region):
        raise ValueError(f"{where}.region must be an AWS region (us-east-1), got {region!r}")
    match = re.fullmatch(_ROLE, role) if isinstance(role, str) else None
    if match is None:
        raise ValueError(
            f"{where}.role_arn must be the cell's role arn:aws:iam::{account}:role/{ROLE_PREFIX}-<stage> "
            f"(templates/cell.yaml), got {role!r}"
        )
    if match[2] != account:
        raise ValueError(f"{where}.role_arn is a role of account {match[2]}, not of the cell's account {account}")
    return Cell(account, region, str(role))


def cell_of_lock(value: Any) -> Cell | None:
    """The cell a promotion in flight recorded in its lock (None: the central account)."""
    try:
        return parse_cell(value, "promotion.cell")
    except ValueError:
        return None


def session_name(tenant: str) -> str:
    """The role session name of a tenant's work in its cell (CloudTrail in the cell shows it)."""
    return f"tierlift-{tenant}"[:64]


def foreign_event(event_account: str | None, cell: Cell | None, central_account: str | None) -> str | None:
    """Why an AWS event (``aws.rds``, ``aws.cloudformation``, ``aws.ecs``, ``aws.secretsmanager``) about a
    tenant's resource must be ignored, or None when it comes from the account that holds them.

    A cell forwards the events of its own default bus; EventBridge sets ``account`` to the account the
    event happened in, and a forwarding rule cannot change it. A tenant's events come from its cell (or
    the central account), so a cell can never steer another cell's tenant. An event with no account (a
    test's hand-built event) is judged by the central account only when the deployment names it.
    """
    expected = cell.account if cell is not None else central_account
    if expected is None or (event_account is None and cell is None):
        return None
    if event_account == expected:
        return None
    where = f"its cell {cell.account}" if cell is not None else f"the central account {central_account}"
    return f"event from account {event_account or 'unknown'}, but the tenant's resources are in {where}"
