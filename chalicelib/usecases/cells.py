"""Reaching a tenant's cell: the deps whose RDS, CloudFormation, ECS, ECR and Secrets Manager adapters are
the tenant's cell's (docs/scale.md, "Cells"), and the trust check of the AWS events a cell forwards.

A promotion works in the cell its lock recorded when it started; a request, a snapshot and the sweep in
the cell its tenant's config names. The state store, the bus and the ledger are always the central ones.
"""

from __future__ import annotations

from chalicelib.deps import Deps
from chalicelib.domain.cells import Cell, foreign_event
from chalicelib.domain.config import TenantConfig
from chalicelib.domain.model import Promotion


def of_promotion(deps: Deps, promotion: Promotion | None) -> Deps:
    """The deps of the cell ``promotion`` runs in (raises ``CellRefused`` when its role refuses)."""
    if promotion is None:
        return deps
    return deps.in_cell(promotion.request.cell_settings, promotion.tenant)


def of_config(deps: Deps, config: TenantConfig) -> Deps:
    """The deps of the cell the tenant's config names (raises ``CellRefused`` when its role refuses)."""
    return deps.in_cell(config.cell, config.tenant.name)


def foreign(deps: Deps, account: str | None, cell: Cell | None) -> str | None:
    """Why an AWS event from ``account`` about a tenant in ``cell`` is ignored (None: it is the tenant's)."""
    return foreign_event(account, cell, deps.settings.central_account)
