"""Fixes for moto gaps that stand between our CloudFormation template and moto's RDS.

Operator wing only (tests, local cloud, benchmarks): never imported by ``chalicelib``. Each patch is
applied once, idempotently, by :func:`apply`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

_applied = False


def apply() -> None:
    """Patch moto in this process. Safe to call more than once."""
    global _applied
    if _applied:
        return
    from moto.rds.models import DBInstance

    original = DBInstance.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        # moto expects DBSubnetGroupName to be a resource of the same template; a plain name (a
        # template parameter, as in ours) crashes it with "'str' object has no attribute 'name'".
        properties = dict(cloudformation_json.get("Properties", {}))
        if isinstance(properties.get("DBSubnetGroupName"), str):
            properties["DBSubnetGroupName"] = SimpleNamespace(name=properties["DBSubnetGroupName"])
        # moto reads VpcSecurityGroupIds; CloudFormation's property is VPCSecurityGroups.
        if "VPCSecurityGroups" in properties and "VpcSecurityGroupIds" not in properties:
            properties["VpcSecurityGroupIds"] = properties["VPCSecurityGroups"]
        patched = dict(cloudformation_json, Properties=properties)
        return original(cls, resource_name, patched, account_id, region_name, **kwargs)

    DBInstance.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[method-assign,assignment]
    _applied = True
