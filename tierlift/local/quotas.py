"""RDS account quotas in the local cloud, enforced as RDS enforces them.

moto lets an account hold any number of DB instances and manual snapshots. RDS does not: past the
account's ``DBInstances`` quota (40 by default) ``CreateDBInstance`` and
``RestoreDBInstanceFromDBSnapshot`` answer ``InstanceQuotaExceeded``, and a CloudFormation stack whose
``AWS::RDS::DBInstance`` would exceed it fails that resource with the same error (then rolls back);
past the ``ManualSnapshots`` quota (100) ``CreateDBSnapshot`` answers ``SnapshotQuotaExceeded``.
``DescribeAccountAttributes`` reports the maxima in force. Both are settable (``local serve
--db-instance-quota 40 --snapshot-quota 100``, or ``LocalCloud(quotas=Quotas(...))``).

:func:`install` patches moto's RDS responses (API calls only: a stack's final snapshot taken by
``DeletionPolicy: Snapshot`` is not refused, as CloudFormation's delete is not); the stack path goes
through the emulator's ``stack_failure`` hook (:func:`stack_failure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_DB_INSTANCES = 40
DEFAULT_MANUAL_SNAPSHOTS = 100


@dataclass
class Quotas:
    db_instances: int = DEFAULT_DB_INSTANCES
    manual_snapshots: int = DEFAULT_MANUAL_SNAPSHOTS


_installed: Quotas | None = None
_where: tuple[str, str] = ("123456789012", "us-east-1")
_patched = False


def current() -> Quotas | None:
    return _installed


def instance_quota_message(quota: int) -> str:
    return (
        f"DB instance quota of {quota} exceeded: you have reached the maximum number of DB instances"
        " allowed (Service: Rds, Status Code: 400, Error Code: InstanceQuotaExceeded)"
    )


def _backend_counts(backend: Any) -> tuple[int, int]:
    manual = sum(1 for s in backend.database_snapshots.values() if s.snapshot_type == "manual")
    return len(backend.databases), manual


def stack_failure(account_id: str | None = None) -> str | None:
    """The reason a stack's DB instance cannot be created now in ``account_id`` (the installed account when
    not given) because that account reached its quota (each account, a cell too, has its own), else None."""
    if _installed is None:
        return None
    from moto.rds.models import rds_backends

    installed_account, region = _where
    instances, _ = _backend_counts(rds_backends[account_id or installed_account][region])
    if instances >= _installed.db_instances:
        return instance_quota_message(_installed.db_instances)
    return None


def install(quotas: Quotas, account_id: str = "123456789012", region: str = "us-east-1") -> None:
    """Enforce ``quotas`` in this process's moto RDS (the server process of the local cloud)."""
    global _installed, _patched, _where
    _installed, _where = quotas, (account_id, region)
    if _patched:
        return
    from moto.core.responses import ActionResult
    from moto.rds.exceptions import RDSClientError
    from moto.rds.responses import RDSResponse

    def guard_instances(self: Any) -> None:
        if _installed is None:
            return
        instances, _ = _backend_counts(self.backend)
        if instances >= _installed.db_instances:
            raise RDSClientError("InstanceQuotaExceeded", instance_quota_message(_installed.db_instances))

    def guard_snapshots(self: Any) -> None:
        if _installed is None:
            return
        _, manual = _backend_counts(self.backend)
        if manual >= _installed.manual_snapshots:
            raise RDSClientError(
                "SnapshotQuotaExceeded",
                f"Cannot create more than {_installed.manual_snapshots} manual snapshots",
            )

    def guarded(method: Any, guard: Any) -> Any:
        def call(self: Any) -> Any:
            guard(self)
            return method(self)

        return call

    RDSResponse.create_db_instance = guarded(RDSResponse.create_db_instance, guard_instances)  # type: ignore[method-assign]
    RDSResponse.restore_db_instance_from_db_snapshot = guarded(  # type: ignore[method-assign]
        RDSResponse.restore_db_instance_from_db_snapshot, guard_instances
    )
    RDSResponse.create_db_snapshot = guarded(RDSResponse.create_db_snapshot, guard_snapshots)  # type: ignore[method-assign]

    describe = RDSResponse.describe_account_attributes  # type: ignore[attr-defined]

    def describe_account_attributes(self: Any) -> Any:
        result = describe(self)
        if _installed is None:
            return result
        maxima = {"DBInstances": _installed.db_instances, "ManualSnapshots": _installed.manual_snapshots}
        data: Any = result.result
        quotas = [{**q, "Max": maxima.get(q["AccountQuotaName"], q["Max"])} for q in data["AccountQuotas"]]
        return ActionResult({"AccountQuotas": quotas})

    RDSResponse.describe_account_attributes = describe_account_attributes  # type: ignore[attr-defined]
    _patched = True
